# %post: $1 is 1 on first install, 2+ on upgrade.
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -eq 1 ]; then
    # Enable per the preset; not started: the broker settings need editing first.
    systemctl preset iemd.service >/dev/null 2>&1 || :
fi
exit 0
