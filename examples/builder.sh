# The builder of every package in this set (run by the static busybox sh):
# load the stdenv (PATH from the inputs) and run the package's buildCommand.
. "$stdenv/setup"
genericBuild
