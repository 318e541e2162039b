#!@busybox@/bin/sh
# cc: Debian's tcc run through its own glibc loader (all inside this store
# path), compiling against musl and linking statically, so the programs it
# makes run in the sandbox and anywhere else.
t=@out@
link=1
for a in "$@"; do
    case "$a" in -c | -E | -S) link= ;; esac
done
run() {
    exec "$t/lib/ld-linux-x86-64.so.2" --library-path "$t/lib" "$t/libexec/tcc" \
        -nostdinc -nostdlib -I"$t/musl/include" -I"$t/tcc/include" "$@"
}
if [ -n "$link" ]; then
    run -static "$t/musl/lib/crt1.o" "$t/musl/lib/crti.o" "$@" \
        "$t/musl/lib/libc.a" "$t/tcc/libtcc1.a" "$t/musl/lib/crtn.o"
else
    run "$@"
fi
