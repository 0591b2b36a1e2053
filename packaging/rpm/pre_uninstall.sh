# %preun: $1 is 0 on removal, 1+ when an upgrade removes the old version.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now iemd.service >/dev/null 2>&1 || :
fi
exit 0
