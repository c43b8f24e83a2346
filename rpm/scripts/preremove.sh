#!/bin/sh
# Before removal: on erase (rpm: $1 = 0; deb: remove or purge) stop and
# disable the service, as %systemd_preun does. On upgrade, leave it running.
case "$1" in
  0|remove|purge)
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
      systemctl --no-reload disable --now wgk3s.service >/dev/null 2>&1 || :
    fi
    # The appliance will not run again: nothing it or k3s made stays
    # behind (fail-closed routes, k3s's pods and their mounts).
    if command -v appliance >/dev/null 2>&1; then
      appliance cleanup --all >/dev/null 2>&1 || :
    fi
    ;;
esac
exit 0
