#!/usr/bin/env bash
# Install what the local single-node SLURM test cluster needs (tests/hpc_fixtures.py starts it).
#
#   sudo .ci/install-slurm.sh        # Debian/Ubuntu; idempotent, a no-op when everything is there
#
# Packages: munge (auth), slurmctld + slurmd + slurm-client (Slurm 22.05 on Debian 12), and
# slurmdbd + mariadb-server so that `sacct` works (submitit polls job states with sacct; without
# accounting it never sees a cancelled job finish). Nothing is started here: the pytest fixture
# starts the daemons as plain processes in a scratch folder and stops them at the end of the session.
set -euo pipefail

pkgs=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server procps util-linux)
[ "$(id -u)" = 0 ] || { echo "install-slurm.sh: run as root (apt-get install ${pkgs[*]})" >&2; exit 2; }
command -v apt-get >/dev/null || { echo "install-slurm.sh: needs apt-get (Debian/Ubuntu); install ${pkgs[*]} by hand" >&2; exit 2; }

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-slurm.sh: already installed: ${pkgs[*]}"
else
  echo "install-slurm.sh: apt-get install ${missing[*]}"
  apt-get update -qq
  # Without systemd the postinst scripts cannot start services ("policy-rc.d denied"): that is fine,
  # the tests start the daemons themselves.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for exe in munged slurmctld slurmd slurmdbd mariadbd sbatch sacct; do
  command -v "$exe" >/dev/null || { echo "install-slurm.sh: $exe missing after install" >&2; exit 1; }
done
echo "install-slurm.sh: ok: $(slurmctld -V), $(mariadbd --version | cut -d' ' -f1-4)"
