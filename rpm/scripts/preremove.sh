#!/bin/sh
# Before removal: on erase (rpm: $1 = 0; deb: remove or purge) stop and
# disable the service, as %systemd_preun does. On upgrade, leave it running.
case "$1" in
  0|remove|purge)
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
      systemctl --no-reload disable --now wgk3s.service >/dev/null 2>&1 || :
    fi
    # The appliance will not run again: no fail-closed route stays behind.
    /usr/bin/appliance cleanup --all >/dev/null 2>&1 || :
    ;;
esac
exit 0
