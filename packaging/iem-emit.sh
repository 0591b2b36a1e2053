# iem-emit.sh: write an IEM from a shell script through `iemctl emit`.
#
#   . /usr/share/iemd/iem-emit.sh
#   iem_emit CODE MESSAGE [JSON]
#
# The tag is the calling script's name and the pid is the script's ($$), so the record looks like
# the script wrote it. iem_emit never exits the caller's shell: it returns iemctl's status
# (0 written, 2 invalid code/message/JSON, 3 no log socket, 127 iemctl not found) and leaves it in
# IEM_EMIT_STATUS. Under `set -e`, write `iem_emit ... || :` to keep going when logging fails.
#
# Environment:
#   IEMCTL         the iemctl binary (default: iemctl on PATH)
#   IEM_EMIT_TAG   the tag (default: the basename of $0)
#   IEM_EMIT_OPTS  extra iemctl emit options, split on blanks (e.g. "--to syslog --facility local3")
#
# POSIX sh; sourcing it defines iem_emit and nothing else runs.

iem_emit() {
    if [ "$#" -lt 2 ] || [ "$#" -gt 3 ]; then
        echo "iem_emit: usage: iem_emit CODE MESSAGE [JSON]" >&2
        IEM_EMIT_STATUS=2
        return 2
    fi
    # iemctl accepts 1..48 printable characters without blanks, '[', ']' or ':' as a tag.
    _iem_emit_tag=${IEM_EMIT_TAG:-${0##*/}}
    _iem_emit_tag=$(printf '%s' "$_iem_emit_tag" | tr -c 'A-Za-z0-9._+@-' '_' | cut -c1-48)
    [ -n "$_iem_emit_tag" ] || _iem_emit_tag=sh
    # IEM_EMIT_OPTS is split on blanks on purpose; `--` ends the options so a message may start
    # with '-'.
    if [ "$#" -eq 3 ]; then
        # shellcheck disable=SC2086
        "${IEMCTL:-iemctl}" emit $IEM_EMIT_OPTS --tag "$_iem_emit_tag" --pid "$$" \
            --json-extra "$3" -- "$1" "$2"
    else
        # shellcheck disable=SC2086
        "${IEMCTL:-iemctl}" emit $IEM_EMIT_OPTS --tag "$_iem_emit_tag" --pid "$$" -- "$1" "$2"
    fi
    IEM_EMIT_STATUS=$?
    unset _iem_emit_tag
    return "$IEM_EMIT_STATUS"
}
