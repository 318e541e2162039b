# builtins.toPath keeps the string context of a derivation (nixpkgs'
# texlive.combine relies on it to depend on the packages it combines).
let
  d = derivation { name = "topath-ctx"; system = "x86_64-linux"; builder = "/bin/sh"; };
in {
  ctx = builtins.getContext (builtins.toPath d);
  plain = builtins.hasContext (builtins.toPath "/a/../b");
  path = builtins.toPath "/x//y/";
}
