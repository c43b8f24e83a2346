#!/bin/sh
# After removal: reload systemd; on upgrade (rpm: $1 >= 1; deb: upgrade)
# restart the service only if it was running, as %systemd_postun_with_restart does.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload >/dev/null 2>&1 || :
  case "$1" in
    1|2|upgrade)
      systemctl try-restart wgk3s.service >/dev/null 2>&1 || :
      ;;
  esac
fi
exit 0
