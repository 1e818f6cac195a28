#!/usr/bin/env bash
# 1,000 files of 4 KiB: rampart put -r / get -r to 4 local clouds vs rclone crypt
# (one local dir, and a union of 4 local dirs with create_policy=all), same run.
set -euo pipefail
command -v rclone >/dev/null || { echo "bench-tree.sh: needs rclone (Debian: apt-get install rclone)" >&2; exit 1; }
R=${RAMPART:-$(cd "$(dirname "$0")/.." && pwd)/target/release/rampart}
[ -x "$R" ] || { echo "bench-tree.sh: build it first: cargo build --release -p rampart" >&2; exit 1; }
N=${N:-1000}; SZ=${SZ:-4096}; JOBS=${JOBS:-32}
W=$(mktemp -d /tmp/bench-tree.XXXX); trap 'rm -rf "$W"' EXIT
mkdir -p "$W/src"
for i in $(seq 1 "$N"); do head -c "$SZ" /dev/urandom > "$W/src/f$i"; done
cd "$W"; "$R" init >/dev/null
PASS=$(rclone obscure benchpass)
cat > "$W/rclone.conf" <<C
[one]
type = crypt
remote = $W/rc1
password = $PASS
[u4]
type = union
upstreams = $W/u1 $W/u2 $W/u3 $W/u4
create_policy = all
action_policy = all
search_policy = ff
[crypt4]
type = crypt
remote = u4:
password = $PASS
C
mkdir -p "$W"/u{1,2,3,4}
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }
rate() { echo "scale=0; $N / $1" | bc; }
rp=$(t "$R" put -r src bench --jobs "$JOBS")
rg=$(t "$R" get -r bench down --jobs "$JOBS")
rs=$(t "$R" put -r src bench --jobs "$JOBS")
c1p=$(t rclone --config "$W/rclone.conf" copy --transfers "$JOBS" src one:)
c1g=$(t rclone --config "$W/rclone.conf" copy --transfers "$JOBS" one: down1)
c4p=$(t rclone --config "$W/rclone.conf" copy --transfers "$JOBS" src crypt4:)
c4g=$(t rclone --config "$W/rclone.conf" copy --transfers "$JOBS" crypt4: down4)
cmp -s <(cd src; cat $(ls)) <(cd down; cat $(ls)) || { echo "rampart download differs"; exit 1; }
printf "%-34s %10s %10s\n" "$N files x $SZ B, jobs $JOBS" "up files/s" "down files/s"
printf "%-34s %10s %10s\n" "rampart (4 local clouds, n=4 f=1)" "$(rate $rp)" "$(rate $rg)"
printf "%-34s %10s %10s\n" "rclone crypt, one dir" "$(rate $c1p)" "$(rate $c1g)"
printf "%-34s %10s %10s\n" "rclone crypt, union of 4 (all)" "$(rate $c4p)" "$(rate $c4g)"
printf "ratio rampart/crypt-union4: up %.2f down %.2f; rampart rerun (all skipped): %s s\n" \
  "$(echo "$c4p / $rp" | bc -l)" "$(echo "$c4g / $rg" | bc -l)" "$rs"
