# b3's example package set, built offline on a Debian machine.
#
# The toolchain enters the store through b3 itself with `builtins.path`:
# Debian's static busybox (busybox-static) and Debian's tcc with the glibc
# loader and libraries it runs on, plus musl's headers and static libc
# (musl-dev). Everything after that is built in b3's sandbox, which sees
# nothing but the inputs' closure:
#
#   busybox   the busybox applets as a package (bin/sh, bin/cp, ...)
#   stdenv    a tiny stdenv: `setup` puts the inputs' bin/ on PATH
#   tcc       `cc`: tcc compiling against musl, linking statically
#   hello     a C program compiled from ./src/hello.c
#   greet     a second C program that runs hello (a run-time dependency)
#   shell     a mkShell-like environment with greet and hello, for `b3 shell`
#
# It also answers `import <nixpkgs> {}` well enough for `nix-shell -p`
# (`b3 shell -I nixpkgs=./examples -p hello`): `pkgs`, `runCommand`, `mkShell`.
{ system ? "x86_64-linux"
, busyboxBin ? /bin/busybox
, tccBin ? /usr/bin/tcc
, tccLib ? /usr/lib/x86_64-linux-gnu/tcc
, glibcLib ? /lib/x86_64-linux-gnu
, muslLib ? /usr/lib/x86_64-linux-musl
, muslInclude ? /usr/include/x86_64-linux-musl
, ...
}:
let
  imported = name: path: builtins.path { inherit name path; };
  bb = imported "busybox-static" busyboxBin;
  ld = imported "ld-linux-x86-64.so.2" (glibcLib + "/ld-linux-x86-64.so.2");

  pkgs = {
    inherit pkgs system;

    # Busybox picks its applet from argv[0], and a store file's name starts
    # with its hash: glibc's loader starts it with argv[0] set to `sh`.
    # That sh runs applets (mkdir, cp, ...) without needing them on PATH.
    busybox = derivation {
      name = "busybox";
      inherit system;
      builder = ld;
      args = [ "--argv0" "sh" bb "-c" ''
        set -e
        mkdir -p $out/bin
        cp ${bb} $out/bin/busybox
        chmod 555 $out/bin/busybox
        for a in $($out/bin/busybox --list); do
          [ "$a" = busybox ] || ln -s busybox $out/bin/$a
        done
      '' ];
    };

    stdenv = derivation {
      name = "stdenv";
      inherit system;
      builder = "${pkgs.busybox}/bin/sh";
      PATH = "${pkgs.busybox}/bin";
      args = [ "-ec" ''
        mkdir -p $out
        sed -e "s|@busybox@|${pkgs.busybox}|g" ${./setup.sh} > $out/setup
      '' ];
    };

    mkDerivation = { name, buildCommand, ... }@attrs: derivation ({
      inherit system;
      builder = "${pkgs.busybox}/bin/sh";
      args = [ "-e" ./builder.sh ];
      stdenv = pkgs.stdenv;
    } // attrs);

    runCommand = name: env: buildCommand:
      pkgs.mkDerivation ({ inherit name buildCommand; } // env);

    mkShell = { name ? "shell", packages ? [ ], buildInputs ? [ ], ... }@attrs:
      pkgs.mkDerivation (builtins.removeAttrs attrs [ "packages" ] // {
        inherit name;
        buildInputs = packages ++ buildInputs;
        buildCommand = "echo 'an environment for b3 shell' > $out";
      });

    tcc = pkgs.runCommand "tcc-musl" {
      tcc = imported "tcc" tccBin;
      tccLib = imported "tcc-lib" tccLib;
      muslLib = imported "musl-lib" muslLib;
      muslInclude = imported "musl-include" muslInclude;
      inherit ld;
      libc = imported "libc.so.6" (glibcLib + "/libc.so.6");
      libm = imported "libm.so.6" (glibcLib + "/libm.so.6");
      libpthread = imported "libpthread.so.0" (glibcLib + "/libpthread.so.0");
      libdl = imported "libdl.so.2" (glibcLib + "/libdl.so.2");
      ccScript = ./cc.sh;
    } ''
      mkdir -p $out/bin $out/lib $out/libexec $out/musl $out/tcc
      cp $tcc $out/libexec/tcc
      cp $ld $out/lib/ld-linux-x86-64.so.2
      cp $libc $out/lib/libc.so.6
      cp $libm $out/lib/libm.so.6
      cp $libpthread $out/lib/libpthread.so.0
      cp $libdl $out/lib/libdl.so.2
      cp -r $muslLib $out/musl/lib
      cp -r $muslInclude $out/musl/include
      cp -r $tccLib/include $out/tcc/include
      cp $tccLib/libtcc1.a $out/tcc/libtcc1.a
      sed -e "s|@busybox@|${pkgs.busybox}|g" -e "s|@out@|$out|g" $ccScript > $out/bin/cc
      chmod +x $out/bin/cc
      echo 'int main(void) { return 0; }' > t.c
      $out/bin/cc -o t t.c
      ./t
    '';

    hello = pkgs.runCommand "hello-1.0" {
      nativeBuildInputs = [ pkgs.tcc ];
      src = ./src/hello.c;
    } ''
      mkdir -p $out/bin
      cc -o $out/bin/hello $src
      $out/bin/hello sandbox
    '';

    greet = pkgs.runCommand "greet-1.0" {
      nativeBuildInputs = [ pkgs.tcc ];
      buildInputs = [ pkgs.hello ];
      src = ./src/greet.c;
    } ''
      mkdir -p $out/bin
      cc -DHELLO="\"${pkgs.hello}/bin/hello\"" -o $out/bin/greet $src
    '';

    shell = pkgs.mkShell {
      name = "example-shell";
      packages = [ pkgs.greet pkgs.hello ];
      shellHook = "echo 'b3 example shell: greet and hello are on PATH'";
    };
  };
in
pkgs
