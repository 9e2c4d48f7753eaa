#!/bin/bash
# dockerd runtime "runc-caps" (cluster/lib.sh: ensure_privileged_docker registers it).
# runc, minus the capabilities this process's bounding set lacks. A privileged container asks
# for every capability; on a host whose root lacks one (here CAP_SYS_RESOURCE) runc 1.1 fails
# with "unable to apply caps: operation not permitted". This drops exactly the missing ones
# from the bundle's config.json (create, run) or the process file (exec), then runs the real
# runc with the same arguments.
set -euo pipefail
names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
  LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE
  SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME
  SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG
  WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE)
# The real runc: Debian's, unless RUNC names another.
: "${RUNC:=/usr/bin/runc}"
bundle="" process="" cmd=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --bundle | -b) bundle="${args[i + 1]}" ;;
    --bundle=*) bundle="${args[i]#*=}" ;;
    --process) process="${args[i + 1]}" ;;
    --process=*) process="${args[i]#*=}" ;;
    create | run | exec) [[ -z "${cmd}" ]] && cmd="${args[i]}" ;;
  esac
done
# filter FILE JQ-PATH: remove the missing capabilities from every set under JQ-PATH of FILE.
filter() {
  local bnd missing=() i drop
  bnd=$((16#$(awk '/^CapBnd:/ {print $2}' /proc/self/status)))
  for i in "${!names[@]}"; do
    (((bnd >> i) & 1)) || missing+=("\"CAP_${names[i]}\"")
  done
  ((${#missing[@]})) || return 0
  drop="[$(IFS=,; echo "${missing[*]}")]"
  /usr/bin/jq --argjson drop "${drop}" \
    "if $2 then $2 |= map_values(. - \$drop) else . end" "$1" >"$1.caps-tmp"
  mv "$1.caps-tmp" "$1"
}
case "${cmd}" in
  create | run) [[ -f "${bundle:-.}/config.json" ]] && filter "${bundle:-.}/config.json" .process.capabilities ;;
  exec) [[ -n "${process}" && -f "${process}" ]] && filter "${process}" .capabilities ;;
esac
exec "${RUNC}" "$@"
