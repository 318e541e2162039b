/* The second package: depends on hello at run time. HELLO is the store
   path of hello's binary, passed by the build (-DHELLO=...), so b3's
   reference scanner records hello in greet's closure. */
#include <stdio.h>
#include <unistd.h>

#ifndef HELLO
#error "build with -DHELLO=\"/nix/store/...-hello/bin/hello\""
#endif

int main(int argc, char **argv)
{
    const char *who = argc > 1 ? argv[1] : "b3";
    printf("greet: calling %s\n", HELLO);
    fflush(stdout);
    execl(HELLO, "hello", who, (char *)0);
    perror("greet: exec hello");
    return 127;
}
