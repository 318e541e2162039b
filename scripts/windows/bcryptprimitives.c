/* A stand-in bcryptprimitives.dll for running Rust test binaries under
 * Debian 12's wine 8.0, which lacks this DLL. Rust's standard library
 * (1.78+) imports ProcessPrng from it for random numbers (HashMap keys).
 * Built and installed into the wine prefix by scripts/test-windows.sh;
 * never used on real Windows, which has the real DLL. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length); /* RtlGenRandom */

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
