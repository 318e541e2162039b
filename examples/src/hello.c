/* The example package set's first program: compiled from source in b3's
   sandbox by tcc, statically linked against musl. */
#include <stdio.h>

int main(int argc, char **argv)
{
    const char *who = argc > 1 ? argv[1] : "world";
    printf("Hello, %s! (a C program built by b3 in its sandbox)\n", who);
    return 0;
}
