# Sourced (POSIX sh) by the brokers' entrypoints: a placeholder or short secret stops the
# container at start-up with one line naming the variable, never its value — the shell twin
# of services/core/settings.py's Secret (that one also knows the published example values).
# The sourcing script sets `who` (the component's name) first.
refuse() {
  echo "${who:-lifeline}: refusing to start: $*" >&2
  exit 1
}
check_secret() {  # name value
  case "$(printf '%s' "$2" | tr '[:upper:]' '[:lower:]')" in
    *change-me*|*changeme*|*change_me*|*replace-me*|*placeholder*|*example*)
      refuse "$1 is a placeholder; set a real secret";;
  esac
  [ "${#2}" -ge 16 ] || refuse "$1 is shorter than 16 characters"
}
check_jaas_safe() {  # name value: what may stand inside a JAAS line and a --add-scram spec
  check_secret "$1" "$2"
  printf '%s' "$2" | grep -Eq '^[A-Za-z0-9._~+/=-]+$' \
    || refuse "$1 may only contain A-Z a-z 0-9 . _ ~ + / = - (e.g. openssl rand -base64 32)"
}
