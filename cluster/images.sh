#!/usr/bin/env bash
# Build the cluster's images without a registry, into the local docker:
#   pause   FROM scratch, the project's own static program (cluster/pause)
#   coredns FROM scratch, the coredns binary from build.sh
#   redis   Debian bookworm's redis-server on a debootstrap rootfs; uid/gid 999, port 6379,
#           WORKDIR /data, works with a read-only root filesystem and a writable /data.
#   nginx   Debian bookworm's nginx-light and curl on a debootstrap rootfs, for compose.yaml
#           (NGINX_IMAGE): nginx and curl on PATH like the official nginx image; compose.yaml
#           runs it as uid 101 with its own config.
# Each image carries a cache-key label, so a second run only checks labels.
#   cluster/images.sh               redis, pause and coredns (what the cluster needs)
#   cluster/images.sh redis nginx   only these (scripts/compose-check.sh)
# Prints the image tags, one a line.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# scratch_image <image> <binary> <docker-import-change...>: an image of one static binary.
scratch_image() {
    local image="$1" bin="$2" key dir
    shift 2
    key="$(sha256sum "$(readlink -f "$bin")" | cut -c1-12)"
    [[ "$(image_key "$image")" == "$key" ]] && return 0
    dir="$(mktemp -d)"
    install -m 0755 "$(readlink -f "$bin")" "$dir/$(basename "$bin")"
    log "docker import $image"
    local changes=() c
    for c in "$@"; do changes+=(--change "$c"); done
    tar --numeric-owner --owner=0 --group=0 -C "$dir" -c . |
        docker import "${changes[@]}" --change "LABEL org.chat-history.key=$key" - "$image" >/dev/null
    rm -rf "$dir"
}

# The Debian package makes a system user with whatever uid is free; the chart runs uid 999.
customize_redis() {
    local root="$1"
    chroot "$root" groupmod -g 999 redis
    chroot "$root" usermod -u 999 -g 999 redis
    chroot "$root" sh -c 'chown -R redis:redis /var/lib/redis /var/log/redis /etc/redis'
    install -d -m 0770 -o 999 -g 999 "$root/data"
    # A container config; the chart mounts its own file over this path and passes it explicitly.
    cat >"$root/etc/redis/redis.conf" <<'CONF'
bind 0.0.0.0 -::*
port 6379
protected-mode no
daemonize no
supervised no
logfile ""
dir /data
CONF
    chown 999:999 "$root/etc/redis/redis.conf"
}

redis_image() {
    local tar key
    tar="$(rootfs_tar redis customize_redis redis-server)"
    key="$(basename "$tar" .tar)"
    [[ "$(image_key "$REDIS_IMAGE")" == "$key" ]] && return 0
    log "docker import $REDIS_IMAGE"
    docker import \
        --change 'USER 999:999' \
        --change 'WORKDIR /data' \
        --change 'EXPOSE 6379' \
        --change 'VOLUME /data' \
        --change 'CMD ["redis-server", "/etc/redis/redis.conf"]' \
        --change "LABEL org.chat-history.key=$key" \
        "$tar" "$REDIS_IMAGE" >/dev/null
}

# Debian's nginx starts as root and logs to files; compose.yaml runs it as uid 101 (the official
# image's nginx user) with a config of its own that writes only to /tmp, and stops it with
# SIGQUIT (docker import cannot set STOPSIGNAL). The package's default site is never used.
customize_nginx() {
    local root="$1"
    rm -f "$root/etc/nginx/sites-enabled/default"
}

nginx_image() {
    local tar key
    tar="$(rootfs_tar nginx customize_nginx nginx-light curl)"
    key="$(basename "$tar" .tar)"
    [[ "$(image_key "$NGINX_IMAGE")" == "$key" ]] && return 0
    log "docker import $NGINX_IMAGE"
    docker import \
        --change 'EXPOSE 80' \
        --change 'CMD ["nginx", "-g", "daemon off;"]' \
        --change "LABEL org.chat-history.key=$key" \
        "$tar" "$NGINX_IMAGE" >/dev/null
}

main() {
    need_root
    (($#)) || set -- redis pause coredns
    ensure_dockerd
    local start=$SECONDS image
    for image in "$@"; do
        case "$image" in
            redis)
                redis_image
                echo "$REDIS_IMAGE"
                ;;
            nginx)
                nginx_image
                echo "$NGINX_IMAGE"
                ;;
            pause)
                need_bins pause
                scratch_image "$PAUSE_IMAGE" "$CACHE_BIN/pause" 'USER 65535:65535' 'ENTRYPOINT ["/pause"]'
                echo "$PAUSE_IMAGE"
                ;;
            coredns)
                need_bins coredns
                scratch_image "$COREDNS_IMAGE" "$CACHE_BIN/coredns" 'USER 65534:65534' \
                    'EXPOSE 5353 5353/udp' 'ENTRYPOINT ["/coredns"]'
                echo "$COREDNS_IMAGE"
                ;;
            *) die "unknown image $image: use pause, coredns, redis or nginx" ;;
        esac
    done
    log "images ready in $((SECONDS - start))s"
}

main "$@"
