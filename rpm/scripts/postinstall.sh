#!/bin/sh
# After install or upgrade: make systemd read the new unit. Never enable or
# start: the operator writes /etc/wgk3s.yaml first (as %systemd_post does
# without a preset that enables it).
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
