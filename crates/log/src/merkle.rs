//! The RFC 6962 / RFC 9162 Merkle tree over sealed entries, cut into C2SP tlog-tiles. Sans-IO.
//!
//! Hashing (`leaf_hash`, `node_hash`) and the inclusion/consistency proof algorithms come from
//! the `tlog_tiles` crate (a port of Go's `golang.org/x/mod/sumdb/tlog`); this module adds the
//! bounded-memory [`TreeBuilder`] that grows the tree one leaf at a time and emits each tile
//! when it fills, plus the C2SP tile path syntax.
//!
//! Tiles have height 8 (256 hashes). A level-`L` tile holds the hashes of tree level `8L`. The
//! builder keeps only the incomplete right-edge tile of each level: at most 256 hashes per
//! level and at most 8 levels for 2^64 leaves, so 64 KiB however long the log grows.

use tlog_tiles::{EMPTY_HASH, HASH_SIZE};

pub use tlog_tiles::Hash;

/// Tile height fixed by C2SP tlog-tiles.
pub const TILE_HEIGHT: u8 = 8;
/// Hashes (or entries) in a full tile.
pub const TILE_WIDTH: usize = 1 << TILE_HEIGHT;
/// Tile levels needed for 2^64 leaves.
pub const TILE_LEVELS_MAX: usize = 64 / TILE_HEIGHT as usize;

const _: () = assert!(TILE_WIDTH == 256);

/// RFC 6962 leaf hash: `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    tlog_tiles::record_hash(entry)
}

/// RFC 6962 interior node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: Hash, right: Hash) -> Hash {
    tlog_tiles::node_hash(left, right)
}

/// Hash of a perfect subtree whose leaves (at some level) are `hashes`; `hashes.len()` must be
/// a power of two.
pub fn perfect_subtree_hash(hashes: &[Hash]) -> Hash {
    assert!(hashes.len().is_power_of_two(), "perfect subtree");
    if hashes.len() == 1 {
        return hashes[0];
    }
    let (l, r) = hashes.split_at(hashes.len() / 2);
    node_hash(perfect_subtree_hash(l), perfect_subtree_hash(r))
}

/// A tile of hashes that just filled: level `level`, index `index`, 256 hashes.
#[derive(Debug)]
pub struct FullTile<'a> {
    /// Tile level (tree level `8 * level`).
    pub level: u8,
    /// Tile index within its level.
    pub index: u64,
    /// The 256 hashes.
    pub hashes: &'a [Hash],
}

/// Grows an RFC 6962 tree leaf by leaf, keeping only the right edge (see module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TreeBuilder {
    size: u64,
    /// `levels[l]` holds the hashes of the incomplete tile at level `l` (always < 256).
    levels: Vec<Vec<Hash>>,
}

impl TreeBuilder {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the builder for a tree of `size` leaves from its right-edge partial tiles:
    /// `edge[l]` must hold exactly `(size >> 8l) % 256` hashes of level-`l` tile
    /// `size >> 8(l+1)`. Returns `None` if the widths are wrong.
    pub fn from_right_edge(size: u64, edge: Vec<Vec<Hash>>) -> Option<Self> {
        let mut levels = edge;
        while levels.last().is_some_and(Vec::is_empty) {
            levels.pop();
        }
        if levels.len() > TILE_LEVELS_MAX {
            return None;
        }
        for (l, tile) in levels.iter().enumerate() {
            if tile.len() != Self::edge_width(size, l as u8) {
                return None;
            }
        }
        let b = TreeBuilder { size, levels };
        b.invariants();
        Some(b)
    }

    /// Width of the incomplete level-`level` tile of a tree of `size` leaves.
    pub fn edge_width(size: u64, level: u8) -> usize {
        let shift = u32::from(level) * u32::from(TILE_HEIGHT);
        if shift >= 64 {
            0
        } else {
            ((size >> shift) % TILE_WIDTH as u64) as usize
        }
    }

    /// Index of the incomplete level-`level` tile of a tree of `size` leaves.
    pub fn edge_index(size: u64, level: u8) -> u64 {
        let shift = (u32::from(level) + 1) * u32::from(TILE_HEIGHT);
        if shift >= 64 { 0 } else { size >> shift }
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The incomplete right-edge tile of each level (for writing partial tiles).
    pub fn right_edge(&self) -> &[Vec<Hash>] {
        &self.levels
    }

    /// Appends one leaf hash. `on_full` is called for every tile that fills, lowest first.
    pub fn push(&mut self, leaf: Hash, mut on_full: impl FnMut(FullTile<'_>)) {
        let mut carry = leaf;
        let mut level = 0usize;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::with_capacity(TILE_WIDTH));
            }
            let tile = &mut self.levels[level];
            tile.push(carry);
            if tile.len() < TILE_WIDTH {
                break;
            }
            let index = Self::edge_index(self.size, level as u8);
            on_full(FullTile {
                level: level as u8,
                index,
                hashes: tile,
            });
            carry = perfect_subtree_hash(tile);
            tile.clear();
            level += 1;
            assert!(level < TILE_LEVELS_MAX, "2^64 leaves");
        }
        self.size += 1;
        debug_assert!(self.invariants_hold());
    }

    /// The RFC 6962 root hash of the current tree.
    pub fn root(&self) -> Hash {
        // The tree decomposes into perfect subtrees of strictly decreasing size, one per set
        // bit of `size`: walk the edge tiles from the top level down, splitting each by the
        // bits of its width, then fold right to left.
        let mut parts: Vec<Hash> = Vec::with_capacity(64);
        for tile in self.levels.iter().rev() {
            let mut start = 0usize;
            let mut bit = TILE_WIDTH >> 1;
            while bit > 0 {
                if tile.len() & bit != 0 {
                    parts.push(perfect_subtree_hash(&tile[start..start + bit]));
                    start += bit;
                }
                bit >>= 1;
            }
        }
        let Some(mut acc) = parts.pop() else {
            return EMPTY_HASH;
        };
        while let Some(left) = parts.pop() {
            acc = node_hash(left, acc);
        }
        acc
    }

    fn invariants_hold(&self) -> bool {
        self.levels.len() <= TILE_LEVELS_MAX
            && self
                .levels
                .iter()
                .enumerate()
                .all(|(l, t)| t.len() == Self::edge_width(self.size, l as u8))
    }

    fn invariants(&self) {
        assert!(self.levels.len() <= TILE_LEVELS_MAX);
        assert!(self.invariants_hold(), "edge tile widths match the size");
    }
}

/// Concatenates hashes into tile bytes.
pub fn tile_bytes(hashes: &[Hash]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hashes.len() * HASH_SIZE);
    for h in hashes {
        out.extend_from_slice(&h.0);
    }
    out
}

/// Splits tile bytes into hashes; `None` unless the length is a multiple of 32 and at most a
/// full tile.
pub fn tile_hashes(bytes: &[u8]) -> Option<Vec<Hash>> {
    if !bytes.len().is_multiple_of(HASH_SIZE) || bytes.len() > TILE_WIDTH * HASH_SIZE {
        return None;
    }
    Some(
        bytes
            .chunks_exact(HASH_SIZE)
            .map(|c| {
                let mut h = [0u8; HASH_SIZE];
                h.copy_from_slice(c);
                Hash(h)
            })
            .collect(),
    )
}

/// Which kind of tile a C2SP path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileKind {
    /// A hash tile of the given level.
    Hashes(u8),
    /// An entry bundle (`tile/entries/...`).
    Entries,
}

/// A parsed C2SP tile coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePath {
    /// Hash level or entries.
    pub kind: TileKind,
    /// Tile index.
    pub index: u64,
    /// Width: 256 for a full tile, 1..=255 for a partial one.
    pub width: u16,
}

impl TilePath {
    /// The C2SP path, e.g. `tile/0/x001/234`, `tile/entries/005.p/17`.
    pub fn path(&self) -> String {
        let mut s = String::from("tile/");
        match self.kind {
            TileKind::Hashes(l) => s.push_str(&l.to_string()),
            TileKind::Entries => s.push_str("entries"),
        }
        // N in groups of three digits, all but the last prefixed with 'x'.
        let mut groups = Vec::new();
        let mut n = self.index;
        loop {
            groups.push(n % 1000);
            n /= 1000;
            if n == 0 {
                break;
            }
        }
        for (i, g) in groups.iter().rev().enumerate() {
            s.push('/');
            if i + 1 < groups.len() {
                s.push('x');
            }
            s.push_str(&format!("{g:03}"));
        }
        if usize::from(self.width) != TILE_WIDTH {
            s.push_str(&format!(".p/{}", self.width));
        }
        s
    }

    /// Parses a C2SP tile path; only the canonical spelling is accepted. Never panics.
    pub fn parse(path: &str) -> Option<Self> {
        if path.len() > 64 {
            return None;
        }
        let rest = path.strip_prefix("tile/")?;
        let (kind_s, rest) = rest.split_once('/')?;
        let kind = if kind_s == "entries" {
            TileKind::Entries
        } else {
            let l: u8 = kind_s.parse().ok()?;
            if usize::from(l) >= TILE_LEVELS_MAX {
                return None;
            }
            TileKind::Hashes(l)
        };
        let (num, width) = match rest.split_once(".p/") {
            Some((num, w)) => {
                let w: u16 = w.parse().ok()?;
                if w == 0 || usize::from(w) >= TILE_WIDTH {
                    return None;
                }
                (num, w)
            }
            None => (rest, TILE_WIDTH as u16),
        };
        let mut index: u64 = 0;
        for part in num.split('/') {
            let digits = part.strip_prefix('x').unwrap_or(part);
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let g: u64 = digits.parse().ok()?;
            index = index.checked_mul(1000)?.checked_add(g)?;
        }
        let t = TilePath { kind, index, width };
        // Canonical form only (rejects a missing or misplaced 'x', leading groups of zeros).
        (t.path() == path).then_some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 6962 section 2.1 MTH, written straight from the definition.
    fn model_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => EMPTY_HASH,
            1 => leaves[0],
            n => {
                // Largest power of two strictly less than n.
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                node_hash(model_root(&leaves[..k]), model_root(&leaves[k..]))
            }
        }
    }

    fn h(data: &[u8]) -> Hash {
        leaf_hash(data)
    }

    /// Merkle roots of the RFC 6962 reference test inputs, as published in the
    /// certificate-transparency reference implementation (merkle_tree_test.cc) and reused by
    /// Go's sumdb/tlog tests. Not computed by us.
    #[test]
    fn rfc6962_reference_roots() {
        let inputs: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let mut b = TreeBuilder::new();
        assert_eq!(hex::encode(b.root().0), hex::encode(EMPTY_HASH.0));
        for (input, want) in inputs.iter().zip(roots) {
            b.push(h(input), |_| {});
            assert_eq!(hex::encode(b.root().0), want, "size {}", b.size());
        }
    }

    #[test]
    fn tile_paths_match_c2sp_examples() {
        let t = TilePath {
            kind: TileKind::Hashes(0),
            index: 1_234_067,
            width: 256,
        };
        assert_eq!(t.path(), "tile/0/x001/x234/067");
        let t = TilePath {
            kind: TileKind::Entries,
            index: 5,
            width: 17,
        };
        assert_eq!(t.path(), "tile/entries/005.p/17");
        for bad in [
            "tile/0/1234",
            "tile/0/x001",
            "tile/0/001/234",
            "tile/0/x000/001",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/9/000",
            "tile/entries/../../etc",
            "tile/0/x18446744073709551615",
            "",
        ] {
            assert_eq!(TilePath::parse(bad), None, "{bad}");
        }
        assert_eq!(TilePath::parse("tile/entries/005.p/17"), Some(t));
    }

    #[test]
    fn full_tiles_are_emitted_in_order() {
        let mut b = TreeBuilder::new();
        let mut seen = Vec::new();
        for i in 0..(256 * 256 + 300u32) {
            b.push(h(&i.to_be_bytes()), |t| {
                seen.push((t.level, t.index, t.hashes.len()))
            });
        }
        assert_eq!(seen.iter().filter(|t| t.0 == 0).count(), 257);
        assert_eq!(seen.iter().filter(|t| t.0 == 1).count(), 1);
        assert!(seen.iter().all(|t| t.2 == 256));
        assert_eq!(
            seen[256],
            (1, 0, 256),
            "level-1 tile follows the level-0 tile completing it"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn builder_matches_vec_model(n in 0usize..1200) {
            let leaves: Vec<Hash> = (0..n as u32).map(|i| h(&i.to_le_bytes())).collect();
            let mut b = TreeBuilder::new();
            for (i, l) in leaves.iter().enumerate() {
                b.push(*l, |_| {});
                if i % 97 == 0 {
                    prop_assert_eq!(b.root(), model_root(&leaves[..=i]));
                }
            }
            prop_assert_eq!(b.root(), model_root(&leaves));
            // Rebuilding from the right edge gives the same state.
            let again = TreeBuilder::from_right_edge(b.size(), b.right_edge().to_vec()).unwrap();
            prop_assert_eq!(again.root(), b.root());
        }

        #[test]
        fn tile_path_roundtrip(level in 0u8..8, entries: bool, index: u64, width in 1u16..=256) {
            let kind = if entries { TileKind::Entries } else { TileKind::Hashes(level) };
            let t = TilePath { kind, index, width };
            prop_assert_eq!(TilePath::parse(&t.path()), Some(t));
        }

        #[test]
        fn tile_path_parse_never_panics(s in "[tile/0-9x.pentries]{0,40}") {
            let _ = TilePath::parse(&s);
        }
    }
}
