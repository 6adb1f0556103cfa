#!/bin/sh
# Served by the offline curl/wget for https://astral.sh/uv/install.sh: "installs" the uv that is already
# on the simulated host, where the real installer would put it (~/.local/bin), and writes its env file.
set -u
here_uv=$(command -v uv)
if [ -z "$here_uv" ]; then echo "error: uv stand-in missing from PATH" >&2; exit 1; fi
mkdir -p "$HOME/.local/bin"
ln -sf "$here_uv" "$HOME/.local/bin/uv"
ln -sf "$here_uv" "$HOME/.local/bin/uvx"
cat > "$HOME/.local/bin/env" <<'ENV'
#!/bin/sh
case ":${PATH}:" in
    *:"$HOME/.local/bin":*) ;;
    *) export PATH="$HOME/.local/bin:$PATH" ;;
esac
ENV
echo "downloading uv 0.9.5 x86_64-unknown-linux-gnu"
echo "no checksums to verify"
echo "installing to $HOME/.local/bin"
echo "  uv"
echo "  uvx"
echo "everything's installed!"
