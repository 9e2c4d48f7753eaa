#!/usr/bin/env bash
# Make the project's base image without a registry: debootstrap bookworm (python3, python3-venv,
# ca-certificates) plus the host's extra CAs, imported into docker. Prints the image tag.
# The app image build reuses it:  docker build --network=host --build-arg BASE_IMAGE=<tag> .
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

customize_base() { :; }

main() {
    need_root
    ensure_dockerd
    local start=$SECONDS tar key
    tar="$(rootfs_tar base customize_base python3 python3-venv ca-certificates)"
    key="$(basename "$tar" .tar)"
    if [[ "$(image_key "$BASE_IMAGE")" != "$key" ]]; then
        log "docker import $tar as $BASE_IMAGE"
        # pip in container builds goes through the same TLS-intercepting proxy as the host.
        docker import \
            --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
            --change 'ENV LANG=C.UTF-8' \
            --change "LABEL org.chat-history.key=$key" \
            --change 'CMD ["/bin/bash"]' \
            "$tar" "$BASE_IMAGE" >/dev/null
    fi
    log "$BASE_IMAGE ready in $((SECONDS - start))s"
    echo "$BASE_IMAGE"
}

main "$@"
