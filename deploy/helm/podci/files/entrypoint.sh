#!/bin/sh
# Starts podci in its Pod: composes config.toml from the ConfigMap (global settings in
# config.toml, the runner's settings in runner.toml) and the runner token from the
# Secret, then runs `podci run` (or the podci subcommand given as arguments, e.g. `list`).
#
# The token is read from a file and written with the shell's builtin printf: it never
# appears in a process's argument list or in the Pod spec.
#   /secrets/runner-token               runner authentication token (glrt-...), preferred
#   /secrets/runner-registration-token  legacy registration token: registered at start
# Paths can be moved with PODCI_CONFIGMAP_DIR, PODCI_SECRET_DIR and CONFIG_FILE.
set -eu
umask 077
cm=${PODCI_CONFIGMAP_DIR:-/configmaps}
sec=${PODCI_SECRET_DIR:-/secrets}
cfg=${CONFIG_FILE:-/home/podci/.podci/config.toml}
mkdir -p "$(dirname "$cfg")"

read_secret() {
  # The first line of a Secret key's file, without the trailing newline.
  [ -s "$1" ] || return 1
  IFS= read -r v <"$1" || [ -n "$v" ]
  printf '%s' "$v"
}

token=""
if token=$(read_secret "$sec/runner-token"); then
  :
elif REGISTRATION_TOKEN=$(read_secret "$sec/runner-registration-token"); then
  # `podci register` reads the token from the environment, exchanges it for a runner
  # token and writes it to a scratch config; its `token = "..."` line is read back.
  scratch="$(dirname "$cfg")/registration.toml"
  rm -f "$scratch"
  REGISTRATION_TOKEN=$REGISTRATION_TOKEN podci register --non-interactive \
    --config "$scratch" --url "${CI_SERVER_URL:?set gitlabUrl}" --executor kubernetes \
    --name "${RUNNER_NAME:-podci}" --tag-list "${RUNNER_TAG_LIST:-}" \
    --locked "${REGISTER_LOCKED:-true}" ${REGISTER_RUN_UNTAGGED:+--run-untagged}
  while IFS= read -r line; do
    case $line in
      'token = "'*'"') token=${line#token = \"}; token=${token%\"} ;;
    esac
  done <"$scratch"
  rm -f "$scratch"
else
  echo "podci: no runner token: set runnerToken (or runnerRegistrationToken) in the Secret" \
    "mounted at $sec (keys runner-token or runner-registration-token)" >&2
  exit 1
fi
case $token in
  '' | *[!A-Za-z0-9_.-]*)
    echo "podci: the runner token in $sec is empty or holds characters a GitLab token never has" >&2
    exit 1
    ;;
esac

{
  cat "$cm/config.toml"
  printf '\n[[runners]]\ntoken = "%s"\n' "$token"
  cat "$cm/runner.toml"
} >"$cfg.tmp"
mv "$cfg.tmp" "$cfg"
unset token REGISTRATION_TOKEN

if [ $# -eq 0 ]; then
  set -- run
fi
exec podci "$@" --config "$cfg"
