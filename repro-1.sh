#!/bin/bash
# Old copy of an edited file is orphaned forever when a layout change's removals are postponed
set -u
W=/tmp/explore-layout/r1; rm -rf $W; mkdir -p $W; cd $W
export MIRROR_STATE_DIR=$W/state
mkdir -p src/a && echo A > src/a/x.txt && echo Z > src/z.txt
mirror run src dst --once
# change layout; a/x.txt is edited at the same time, a new file fails to land (any transfer failure)
echo A-edited > src/a/x.txt
echo new > src/n.txt
Y=$(date +%Y); mkdir -p dst/$Y/n.txt && echo foreign > dst/$Y/n.txt/keep   # makes the put of n.txt fail once
mirror run src dst --once --layout by-year          # exit 1: "deletions postponed"
rm -r dst/$Y/n.txt                                   # the obstacle goes away
mirror run src dst --once --layout by-year; echo "run rc=$?"
mirror run src dst --once --layout by-year --rescan; echo "rescan rc=$?"
mirror verify src dst; echo "verify rc=$?"
echo "--- target:"; find dst -type f | sort
echo "--- dst/a/x.txt (old version, no longer tracked):"; cat dst/a/x.txt
