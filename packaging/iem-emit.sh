#!/bin/sh
# Placeholder: the emit branch provides packaging/iem-emit.sh; it replaces this file at merge.
echo "iem-emit.sh: placeholder" >&2
exit 1
