# %pre: the iemd system user and group (idempotent; kept on removal, as distributions do,
# so that files it owned never get a recycled id).
getent group iemd >/dev/null 2>&1 || groupadd -r iemd || :
getent passwd iemd >/dev/null 2>&1 || \
    useradd -r -g iemd -d /var/lib/iemd -s /sbin/nologin -c "IEM agent (iemd)" iemd || :
exit 0
