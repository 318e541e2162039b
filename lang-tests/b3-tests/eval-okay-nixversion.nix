# b3 reports the version of Nix it matches (2.8, the project's oracle):
# nixpkgs 18.03 puts builtins.nixVersion into derivations (irods), so the
# drv paths depend on it.
{ inherit (builtins) nixVersion langVersion; }
