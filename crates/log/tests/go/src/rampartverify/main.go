// Command rampartverify checks a Rampart secure-log directory with Go's reference code,
// golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog:
//
//	rampartverify DIR VKEY INCLUSION_PROOF CONSISTENCY_PROOF OLD_CHECKPOINT
//
// It verifies the checkpoint's note signature and body, recomputes the tree from the level-0
// tiles with its own RFC 6962 code and compares the root, checks every level-1 tile hash and
// every entry bundle against the level-0 tiles, and checks the inclusion and consistency
// proofs (Rampart's text format) with tlog.CheckRecord and tlog.CheckTree. Exit status 0
// only if everything verifies; otherwise one line on stderr says what failed.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "rampartverify: "+format+"\n", args...)
	os.Exit(1)
}

// c2spPath is the C2SP tile path (no height element, "entries" for bundles).
func c2spPath(kind string, index int64, width int) string {
	var groups []string
	n := index
	for {
		groups = append([]string{fmt.Sprintf("%03d", n%1000)}, groups...)
		n /= 1000
		if n == 0 {
			break
		}
	}
	for i := 0; i < len(groups)-1; i++ {
		groups[i] = "x" + groups[i]
	}
	p := "tile/" + kind + "/" + strings.Join(groups, "/")
	if width < 256 {
		p += fmt.Sprintf(".p/%d", width)
	}
	return p
}

// openCheckpoint verifies a signed checkpoint and returns (origin, size, root).
func openCheckpoint(msg []byte, vkey string) (string, int64, tlog.Hash) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		fail("bad verifier key: %v", err)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		fail("checkpoint signature: %v", err)
	}
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 {
		fail("checkpoint body too short")
	}
	if lines[0] != v.Name() {
		fail("checkpoint origin %q is not the key name %q", lines[0], v.Name())
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		fail("checkpoint size %q", lines[1])
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		fail("checkpoint root: %v", err)
	}
	return lines[0], size, root
}

// treeHash is RFC 6962 MTH over leaf hashes, written independently of tlog.TreeHash.
func treeHash(leaves []tlog.Hash) tlog.Hash {
	switch len(leaves) {
	case 0:
		return tlog.Hash{0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55}
	case 1:
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return tlog.NodeHash(treeHash(leaves[:k]), treeHash(leaves[k:]))
}

func readHashTile(dir string, level int, index int64, width int) []tlog.Hash {
	b, err := os.ReadFile(filepath.Join(dir, c2spPath(strconv.Itoa(level), index, width)))
	if err != nil {
		fail("hash tile: %v", err)
	}
	if len(b) != width*32 {
		fail("hash tile %s has %d bytes", c2spPath(strconv.Itoa(level), index, width), len(b))
	}
	out := make([]tlog.Hash, width)
	for i := range out {
		copy(out[i][:], b[i*32:])
	}
	return out
}

// proofLines parses Rampart's proof text: header, key-value lines, then base64 hashes.
func proofLines(path string, header string, keys []string) (map[string]string, []tlog.Hash) {
	b, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	if !sc.Scan() || sc.Text() != header {
		fail("%s: not a %q", path, header)
	}
	kv := map[string]string{}
	for _, k := range keys {
		if !sc.Scan() || !strings.HasPrefix(sc.Text(), k+" ") {
			fail("%s: missing %s", path, k)
		}
		kv[k] = strings.TrimPrefix(sc.Text(), k+" ")
	}
	var hs []tlog.Hash
	for sc.Scan() {
		h, err := tlog.ParseHash(sc.Text())
		if err != nil {
			fail("%s: hash: %v", path, err)
		}
		hs = append(hs, h)
	}
	return kv, hs
}

func main() {
	if len(os.Args) != 6 {
		fail("usage: rampartverify DIR VKEY INCLUSION_PROOF CONSISTENCY_PROOF OLD_CHECKPOINT")
	}
	dir, vkey := os.Args[1], os.Args[2]
	cp, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
	if err != nil {
		fail("%v", err)
	}
	_, size, root := openCheckpoint(cp, vkey)

	// Level-0 tiles, full and the right-edge partial, and the entry bundles beside them.
	var leaves []tlog.Hash
	for t := int64(0); t*256 < size; t++ {
		w := 256
		if rest := size - t*256; rest < 256 {
			w = int(rest)
		}
		hs := readHashTile(dir, 0, t, w)
		bundle, err := os.ReadFile(filepath.Join(dir, c2spPath("entries", t, w)))
		if err != nil {
			fail("entry bundle: %v", err)
		}
		for i := 0; i < w; i++ {
			if len(bundle) < 2 {
				fail("entry bundle %s truncated", c2spPath("entries", t, w))
			}
			n := int(bundle[0])<<8 | int(bundle[1])
			if len(bundle) < 2+n {
				fail("entry bundle %s truncated", c2spPath("entries", t, w))
			}
			if tlog.RecordHash(bundle[2:2+n]) != hs[i] {
				fail("entry %d in %s does not match its level-0 tile", t*256+int64(i), c2spPath("entries", t, w))
			}
			bundle = bundle[2+n:]
		}
		if len(bundle) != 0 {
			fail("entry bundle %s has trailing bytes", c2spPath("entries", t, w))
		}
		leaves = append(leaves, hs...)
	}
	if treeHash(leaves) != root {
		fail("level-0 tiles do not hash to the checkpoint root")
	}
	// Level-1 tile: the roots of the full level-0 tiles.
	if full := size / 256; full > 0 && full < 256 {
		l1 := readHashTile(dir, 1, 0, int(full))
		for i, h := range l1 {
			if treeHash(leaves[i*256:(i+1)*256]) != h {
				fail("level-1 tile hash %d does not match its level-0 tile", i)
			}
		}
	}
	// Go's own tile reader over our files agrees on the root.
	hr := tlog.TileHashReader(tlog.Tree{N: size, Hash: root}, &tiles{dir})
	if h, err := tlog.TreeHash(size, hr); err != nil || h != root {
		fail("tlog.TreeHash over the tiles: %v", err)
	}

	kv, path := proofLines(os.Args[3], "rampart-log inclusion proof v1", []string{"index", "size", "root", "entry"})
	index, _ := strconv.ParseInt(kv["index"], 10, 64)
	psize, _ := strconv.ParseInt(kv["size"], 10, 64)
	entry, err := base64.StdEncoding.DecodeString(kv["entry"])
	if err != nil || psize != size || kv["root"] != root.String() {
		fail("inclusion proof is not for this checkpoint")
	}
	if err := tlog.CheckRecord(path, size, root, index, tlog.RecordHash(entry)); err != nil {
		fail("inclusion proof: %v", err)
	}

	old, err := os.ReadFile(os.Args[5])
	if err != nil {
		fail("%v", err)
	}
	_, oldSize, oldRoot := openCheckpoint(old, vkey)
	kv, cpath := proofLines(os.Args[4], "rampart-log consistency proof v1", []string{"old", "size"})
	if kv["old"] != strconv.FormatInt(oldSize, 10) || kv["size"] != strconv.FormatInt(size, 10) {
		fail("consistency proof is not between these checkpoints")
	}
	if err := tlog.CheckTree(cpath, size, root, oldSize, oldRoot); err != nil {
		fail("consistency proof: %v", err)
	}
	if treeHash(leaves[:oldSize]) != oldRoot {
		fail("old checkpoint root is not a prefix of the tiles")
	}
	fmt.Printf("ok: size %d, %d leaves, inclusion of %d, consistency from %d\n", size, len(leaves), index, oldSize)
}

// tiles serves Go tlog tiles (height 8) from the C2SP layout.
type tiles struct{ dir string }

func (t *tiles) Height() int { return 8 }

func (t *tiles) ReadTiles(ts []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(ts))
	for i, tile := range ts {
		if tile.L < 0 {
			return nil, fmt.Errorf("data tiles not used")
		}
		b, err := os.ReadFile(filepath.Join(t.dir, c2spPath(strconv.Itoa(tile.L), tile.N, tile.W)))
		if err != nil && tile.W < 256 {
			// A partial tile may be served as the prefix of the full one.
			if full, ferr := os.ReadFile(filepath.Join(t.dir, c2spPath(strconv.Itoa(tile.L), tile.N, 256))); ferr == nil && len(full) >= tile.W*32 {
				b, err = full[:tile.W*32], nil
			}
		}
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

func (t *tiles) SaveTiles([]tlog.Tile, [][]byte) {}
