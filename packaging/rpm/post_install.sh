# %post: $1 is 1 on first install, 2+ on upgrade.
# The config directory holds the broker password: root writes, the daemon's group reads.
# (Made here, not as package directories: see Cargo.toml.) Left in place on removal.
install -d -m 0750 -o root -g iemd /etc/iemd /etc/iemd/catalog.d 2>/dev/null || :
# The state directory (spool, checkpoints) is the daemon's alone. Made here rather than by
# systemd's StateDirectory=, which systemd 219 does not know. Kept on removal: it may hold
# alerts not yet published.
install -d -m 0700 -o iemd -g iemd /var/lib/iemd 2>/dev/null || :
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -eq 1 ]; then
    # Enable per the preset; not started: the broker settings need editing first.
    systemctl preset iemd.service >/dev/null 2>&1 || :
fi
exit 0
