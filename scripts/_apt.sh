# Sourced by scripts/pg and scripts/test: install Debian packages that the tests need on a clean machine (CI runs
# as root). Not a command of its own.

# apt_install PACKAGE...: install them quietly, without prompts or recommended extras; the package lists are
# refreshed first (a clean machine may have none, or stale ones). Output goes to stderr. Needs root.
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@"; } >&2
}
