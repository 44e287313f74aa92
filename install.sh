#!/usr/bin/env bash
# Installs Chatao: the server `chataosrv` and the client `chatao`.
#
#   bash install.sh                          asks where to install
#   bash install.sh --local [DIR]            everything in DIR (default ~/chatao); no root needed
#   sudo bash install.sh --system            system-wide, with the chatao.service unit
#   sudo bash install.sh --uninstall         removes a system install; keeps keys, history, config
#   bash install.sh --uninstall --local DIR  removes a local install's programs; keeps its data
#
# Options:
#   --prefix DIR    system install: programs in DIR/bin, man pages and completions in DIR/share
#                   (default /usr/local)
#   --destdir DIR   system install: put every file under DIR instead of / (also $DESTDIR), for
#                   packaging and tests; creates no user and runs no systemctl, but says what it
#                   would run
#   --bin-dir DIR   install the chataosrv and chatao already built in DIR instead of building
#                   (also $CHATAO_BIN_DIR)
#   --purge         with --uninstall: also delete the keys, history, config (and the chatao user)
#   -h, --help      this text
#
# Running it again upgrades the programs and keeps keys, history and config.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODE=""
DIR=""
UNINSTALL=0
PURGE=0
PREFIX=/usr/local
DESTDIR=${DESTDIR:-}
BIN_DIR=${CHATAO_BIN_DIR:-}
RUST_VERSION=1.89 # the workspace's rust-version
SERVICE_USER=chatao

say() { printf '%s\n' "$*"; }
die() {
  printf 'install.sh: %s\n' "$*" >&2
  exit 1
}
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
# A command line, quoted so that it can be pasted into a shell.
quoted() {
  local out="" arg
  for arg in "$@"; do out+="$(printf '%q' "$arg") "; done
  printf '%s\n' "${out% }"
}
# Runs a command that changes the system, or with --destdir only says it would.
system() {
  if [ -n "$DESTDIR" ]; then
    say "would run: $(quoted "$@")"
  else
    say "+ $(quoted "$@")"
    "$@"
  fi
}

while [ $# -gt 0 ]; do
  case "$1" in
  --local)
    MODE=local
    if [ $# -gt 1 ] && [ "${2#-}" = "$2" ]; then
      DIR=$2
      shift
    fi
    ;;
  --local=*) MODE=local DIR=${1#*=} ;;
  --system) MODE=system ;;
  --uninstall) UNINSTALL=1 ;;
  --purge) PURGE=1 ;;
  --prefix) PREFIX=${2:?--prefix needs a directory} && shift ;;
  --prefix=*) PREFIX=${1#*=} ;;
  --destdir) DESTDIR=${2:?--destdir needs a directory} && shift ;;
  --destdir=*) DESTDIR=${1#*=} ;;
  --bin-dir) BIN_DIR=${2:?--bin-dir needs a directory} && shift ;;
  --bin-dir=*) BIN_DIR=${1#*=} ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    usage >&2
    die "unknown option: $1"
    ;;
  esac
  shift
done

case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path, not $PREFIX" ;; esac
if [ -n "$DESTDIR" ]; then
  mkdir -p "$DESTDIR"
  DESTDIR=$(cd "$DESTDIR" && pwd)
fi
[ $PURGE -eq 0 ] || [ $UNINSTALL -eq 1 ] || die "--purge goes with --uninstall"

# No mode given: ask (from a terminal, or from whatever feeds standard input).
if [ -z "$MODE" ]; then
  if [ $UNINSTALL -eq 1 ]; then
    MODE=system
  else
    say "Install Chatao (the server chataosrv and the client chatao):"
    say "  1) in one folder, for you, without root ($HOME/chatao unless you say otherwise)"
    say "  2) system-wide: programs in $PREFIX/bin, the chatao service and user (needs root)"
    answer=""
    read -r -p "Your choice [1/2]: " answer ||
      die "no answer; for scripts, say --local DIR or --system"
    case "$answer" in
    "" | 1 | l | local) MODE=local ;;
    2 | s | system) MODE=system ;;
    *) die "unknown choice: $answer (1 or 2)" ;;
    esac
    if [ "$MODE" = local ]; then
      read -r -p "Folder [$HOME/chatao]: " DIR || true
    fi
  fi
fi
[ "$MODE" = local ] && DIR=${DIR:-$HOME/chatao}
# `~/chatao` typed at the prompt is not expanded by the shell.
# shellcheck disable=SC2088 # the literal text `~/`, as typed, is what is matched
case "$DIR" in "~") DIR=$HOME ;; "~/"*) DIR=$HOME/${DIR#"~/"} ;; esac

# Makes sure $BIN_DIR holds chataosrv and chatao: the given ones, or a fresh release build.
build() {
  if [ -n "$BIN_DIR" ]; then
    for bin in chataosrv chatao; do
      [ -x "$BIN_DIR/$bin" ] || die "--bin-dir $BIN_DIR has no executable $bin"
    done
    BIN_DIR=$(cd "$BIN_DIR" && pwd)
    return
  fi
  local cargo=${CARGO:-cargo} as_user=()
  if ! command -v "$cargo" >/dev/null 2>&1; then
    # `sudo bash install.sh --system` from a user whose Rust lives in ~/.cargo: build as them.
    local home=""
    [ -n "${SUDO_USER:-}" ] && home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    if [ -n "$home" ] && [ -x "$home/.cargo/bin/cargo" ]; then
      cargo=$home/.cargo/bin/cargo
      as_user=(sudo -u "$SUDO_USER" -H)
    else
      die "cargo (the Rust toolchain) is needed to build Chatao, and \`$cargo\` was not found.
Install Rust $RUST_VERSION or newer with rustup:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
then open a new terminal (or run: . \"\$HOME/.cargo/env\") and run this script again.
Or install already built programs with --bin-dir DIR."
    fi
  fi
  local version
  version=$(${as_user[@]+"${as_user[@]}"} "$cargo" --version 2>/dev/null | awk '{print $2}') ||
    die "\`$cargo --version\` failed"
  if [ "$(printf '%s\n%s\n' "$RUST_VERSION" "${version%%-*}" | sort -V | head -n1)" != "$RUST_VERSION" ]; then
    die "Rust $RUST_VERSION or newer is needed; this cargo is $version. Update it with: rustup update"
  fi
  if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1 && ! command -v clang >/dev/null 2>&1; then
    die "a C compiler is needed (to build the bundled SQLite) and none was found.
Install one, e.g.: sudo apt-get install build-essential  (Debian, Ubuntu)
               or: sudo dnf install gcc                  (Fedora)"
  fi
  say "Building Chatao in release mode (the first build takes a few minutes)..."
  ${as_user[@]+"${as_user[@]}"} "$cargo" build --release --locked --manifest-path "$SRC/Cargo.toml" \
    --target-dir "$SRC/target" --bin chataosrv --bin chatao
  BIN_DIR=$SRC/target/release
}

# Writes the shell completions and the man page of program $1 (installed at $2) under the
# share directory $3; quietly skips what this version of the program cannot generate.
install_docs() {
  local name=$1 bin=$2 share=$3 tmp shell dest
  tmp=$(mktemp)
  for shell in bash zsh fish; do
    case $shell in
    bash) dest=$share/bash-completion/completions/$name ;;
    zsh) dest=$share/zsh/site-functions/_$name ;;
    fish) dest=$share/fish/vendor_completions.d/$name.fish ;;
    esac
    if "$bin" --completions "$shell" >"$tmp" 2>/dev/null && [ -s "$tmp" ]; then
      mkdir -p "$(dirname "$dest")"
      install -m 0644 "$tmp" "$dest"
    fi
  done
  if "$bin" --man >"$tmp" 2>/dev/null && [ -s "$tmp" ]; then
    mkdir -p "$share/man/man1"
    install -m 0644 "$tmp" "$share/man/man1/$name.1"
  fi
  rm -f "$tmp"
}

# Removes what install_docs may have written.
remove_docs() {
  local name=$1 share=$2
  rm -f "$share/bash-completion/completions/$name" "$share/zsh/site-functions/_$name" \
    "$share/fish/vendor_completions.d/$name.fish" "$share/man/man1/$name.1"
}

# The commented example of the server's config file (every setting with its default), which
# the chataosrv manual points to, under the share directory $1.
install_example() {
  install -d -m 0755 "$1/doc/chatao"
  install -m 0644 "$SRC/packaging/chatao.toml" "$1/doc/chatao/chatao.toml"
}
remove_example() {
  rm -f "$1/doc/chatao/chatao.toml"
  rmdir "$1/doc/chatao" "$1/doc" 2>/dev/null || true
}

install_local() {
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  build
  install -d -m 0755 "$DIR/bin"
  # No client key here: the client keeps the user's one key where any `chatao` looks for it
  # (~/.config/chatao/clientKey), whichever way it was installed.
  install -d -m 0700 "$DIR/data"
  install -m 0755 "$BIN_DIR/chataosrv" "$BIN_DIR/chatao" "$DIR/bin/"
  install_docs chataosrv "$DIR/bin/chataosrv" "$DIR/share"
  install_docs chatao "$DIR/bin/chatao" "$DIR/share"
  install_example "$DIR/share"
  local server client
  server=$(quoted "$DIR/bin/chataosrv" --data-dir "$DIR/data" 7000)
  client=$(quoted "$DIR/bin/chatao" localhost 7000 alice)
  cat <<EOF

Chatao is installed in $DIR:
  bin/chataosrv, bin/chatao   the server and the client
  data/                       the server's history, and its key in data/serverKey/
  share/                      manual pages, shell completions, and a commented example of
                              the server's config file: share/doc/chatao/chatao.toml
The client uses your key in ~/.config/chatao/clientKey (made on first use), like any
chatao: one key, one identity, however it was installed.

Start the server in the foreground (Ctrl-C stops it):
  $server
or in the background, logging to a file:
  nohup $server >>$(quoted "$DIR/chataosrv.log") 2>&1 &
Then, in another terminal, connect a client (replace alice with your nickname):
  $client

To type just \`chatao\` and \`chataosrv\`, add the folder to your PATH:
  export PATH=$(quoted "$DIR/bin"):\$PATH
EOF
  if [ -e "$DIR/clientKey/key.pem" ]; then
    cat <<EOF

An earlier version of this script made a client key in $DIR/clientKey, which the client no
longer uses by itself. To keep that identity (the nicknames registered to it), say so:
  $(quoted "$DIR/bin/chatao" --key-dir "$DIR/clientKey") localhost 7000 alice
EOF
  fi
}

uninstall_local() {
  [ -d "$DIR" ] || die "$DIR does not exist"
  DIR=$(cd "$DIR" && pwd)
  rm -f "$DIR/bin/chataosrv" "$DIR/bin/chatao"
  rmdir "$DIR/bin" 2>/dev/null || true
  for name in chataosrv chatao; do remove_docs "$name" "$DIR/share"; done
  remove_example "$DIR/share"
  rm -rf "$DIR/share"
  if [ $PURGE -eq 1 ]; then
    # clientKey/ is an earlier version's. The user's own key (~/.config/chatao), used by
    # every chatao, is not this install's to delete.
    rm -rf "$DIR/data" "$DIR/clientKey" "$DIR/chataosrv.log"
    rmdir "$DIR" 2>/dev/null || true
    say "Removed Chatao and its data from $DIR."
  else
    say "Removed the Chatao programs from $DIR; kept data/ (server key, history)."
    say "To delete those too: bash install.sh --uninstall --purge --local $(quoted "$DIR")"
  fi
}

# Whether systemd runs this machine (not so in most containers).
have_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

need_root() {
  [ -n "$DESTDIR" ] || [ "$(id -u)" -eq 0 ] ||
    die "a system-wide $1 needs root: sudo bash install.sh $2
(or, without root, bash install.sh --local DIR)"
}

install_system() {
  need_root install --system
  build
  local R=$DESTDIR bindir=$PREFIX/bin share=$DESTDIR$PREFIX/share
  install -d -m 0755 "$R$bindir"
  install -m 0755 "$BIN_DIR/chataosrv" "$BIN_DIR/chatao" "$R$bindir/"
  install_docs chataosrv "$R$bindir/chataosrv" "$share"
  install_docs chatao "$R$bindir/chatao" "$share"
  install_example "$share"

  if [ -z "$DESTDIR" ] && id -u "$SERVICE_USER" >/dev/null 2>&1; then
    say "The user $SERVICE_USER exists."
  else
    [ -n "$DESTDIR" ] || command -v useradd >/dev/null 2>&1 ||
      die "useradd was not found; create a system user and group named $SERVICE_USER, then run this again"
    local nologin
    nologin=$(command -v nologin || echo /usr/sbin/nologin)
    system useradd --system --user-group --home-dir /var/lib/chatao --no-create-home \
      --shell "$nologin" --comment "Chatao chat server" "$SERVICE_USER"
  fi

  install -d -m 0750 "$R/var/lib/chatao"
  system chown "$SERVICE_USER:$SERVICE_USER" /var/lib/chatao
  install -d -m 0755 "$R/etc/chatao"
  local conf=$R/etc/chatao/chatao.toml
  if [ -e "$conf" ]; then
    say "Kept the existing /etc/chatao/chatao.toml (the current example is $SRC/packaging/chatao.toml)."
  else
    install -m 0640 "$SRC/packaging/chatao.toml" "$conf"
    system chgrp "$SERVICE_USER" /etc/chatao/chatao.toml
  fi
  "$R$bindir/chataosrv" --config "$conf" --check-config >/dev/null ||
    die "/etc/chatao/chatao.toml is invalid (see above); fix it and run this again"

  local unit=$R/etc/systemd/system/chatao.service
  install -d -m 0755 "$(dirname "$unit")"
  sed "s|/usr/local/bin/chataosrv|$bindir/chataosrv|g" "$SRC/packaging/chatao.service" >"$unit.tmp"
  chmod 0644 "$unit.tmp"
  mv "$unit.tmp" "$unit"

  if [ -n "$DESTDIR" ] || have_systemd; then
    system systemctl daemon-reload
    system systemctl enable chatao.service
    if [ -z "$DESTDIR" ] && systemctl is-active --quiet chatao.service; then
      system systemctl restart chatao.service
    fi
  else
    say "systemd is not running here: chatao.service is installed but not enabled."
    say "Run the server with: runuser -u $SERVICE_USER -- $(quoted "$bindir/chataosrv" --config /etc/chatao/chatao.toml)"
  fi

  local fingerprint=""
  if [ -z "$DESTDIR" ] && command -v runuser >/dev/null 2>&1; then
    fingerprint=$(cd / && runuser -u "$SERVICE_USER" -- "$bindir/chataosrv" \
      --config /etc/chatao/chatao.toml --fingerprint 2>/dev/null) || fingerprint=""
  fi
  [ -z "$fingerprint" ] || fingerprint="
The server key's fingerprint, for your users to compare: $fingerprint
"
  cat <<EOF

Chatao is installed system-wide${DESTDIR:+ under $DESTDIR}:
  $bindir/chataosrv, $bindir/chatao
  /etc/chatao/chatao.toml           settings (check them: chataosrv --config /etc/chatao/chatao.toml --check-config)
  /var/lib/chatao                   server key and history, owned by the $SERVICE_USER user
  /etc/systemd/system/chatao.service
$fingerprint
Start the server:           systemctl start chatao
Its state and its log:      systemctl status chatao; journalctl -u chatao -f
After editing the settings: systemctl restart chatao  (reload re-reads the allowlist and operators)
Users connect with:         chatao $(hostname 2>/dev/null || echo HOST) 7000 NICKNAME
EOF
}

uninstall_system() {
  need_root uninstall --uninstall
  local R=$DESTDIR bindir=$PREFIX/bin share=$DESTDIR$PREFIX/share
  if [ -n "$DESTDIR" ] || have_systemd; then
    system systemctl disable --now chatao.service || true
  fi
  rm -f "$R/etc/systemd/system/chatao.service"
  if [ -n "$DESTDIR" ] || have_systemd; then
    system systemctl daemon-reload
  fi
  rm -f "$R$bindir/chataosrv" "$R$bindir/chatao"
  for name in chataosrv chatao; do remove_docs "$name" "$share"; done
  remove_example "$share"
  if [ $PURGE -eq 1 ]; then
    rm -rf "$R/var/lib/chatao" "$R/etc/chatao"
    if [ -n "$DESTDIR" ] || id -u "$SERVICE_USER" >/dev/null 2>&1; then
      system userdel "$SERVICE_USER"
    fi
    say "Removed Chatao, its keys, history, settings and user."
  else
    say "Removed the Chatao programs and service; kept /etc/chatao (settings), /var/lib/chatao (server key, history) and the $SERVICE_USER user."
    say "To delete those too: sudo bash install.sh --uninstall --purge"
  fi
}

case "$MODE/$UNINSTALL" in
local/0) install_local ;;
local/1) uninstall_local ;;
system/0) install_system ;;
system/1) uninstall_system ;;
esac
