# The example stdenv's `setup`, sourced by builders and by `b3 shell`
# (bash or busybox sh): PATH from the inputs' bin directories, then
# busybox's applets; genericBuild runs $buildCommand.
PATH=@busybox@/bin
for p in $nativeBuildInputs $buildInputs; do
    if [ -d "$p/bin" ]; then PATH="$p/bin:$PATH"; fi
done
export PATH
genericBuild() {
    eval "$buildCommand"
}
# runHook NAME: run the hook held in the variable NAME (e.g. shellHook).
runHook() {
    eval "_b3_hook=\${$1:-}"
    if [ -n "$_b3_hook" ]; then eval "$_b3_hook"; fi
}
