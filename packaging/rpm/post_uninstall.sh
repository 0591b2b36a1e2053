# %postun: $1 is 0 on removal, 1+ after an upgrade (then restart the running daemon, if any).
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -ge 1 ]; then
    systemctl try-restart iemd.service >/dev/null 2>&1 || :
fi
exit 0
