/*
 * walogs/_crc.h - the one CRC-32 the compiled frame codec uses (I1).
 *
 * docs/format.md fixes the checksum: CRC-32 (IEEE 802.3), exactly zlib's crc32(),
 * chained as crc32(crc32(0, a), b) == crc32(0, a ++ b).  libdeflate computes
 * the same function with carry-less multiply (PCLMUL/PMULL) folding, several
 * times faster than the zlib shipped by most distributions on the 100 B to
 * 16 MiB inputs a log holds, so setup.py defines WALOGS_HAVE_LIBDEFLATE (and
 * links -ldeflate) when a test program using it compiles and links, and links
 * -lz otherwise.  tests/test_codec.py checks both against Python's
 * zlib.crc32 through the frames they produce (P8).
 */
#ifndef WALOGS_CRC_H
#define WALOGS_CRC_H

#include <stddef.h>
#include <stdint.h>

#ifdef WALOGS_HAVE_LIBDEFLATE
#include <libdeflate.h>
#define WALOGS_CRC_BACKEND "libdeflate"
#else
#include <zlib.h>
#define WALOGS_CRC_BACKEND "zlib"
#endif

/*
 * Update the running CRC-32 `crc` (0 to start) with the `n` bytes at `p`.
 * n == 0 returns crc unchanged without touching p: both libraries return 0,
 * not crc, when handed a NULL buffer, which would silently break a chain.
 * Safe to call without the GIL.
 */
static inline uint32_t walogs_crc32(uint32_t crc, const unsigned char *p, size_t n)
{
    if (n == 0)
        return crc;
#ifdef WALOGS_HAVE_LIBDEFLATE
    return libdeflate_crc32(crc, p, n);
#else
    /* zlib's crc32() takes a uInt length: feed it in 1 GiB pieces. */
    while (n > 0) {
        uInt chunk = n > 0x40000000U ? 0x40000000U : (uInt)n;
        crc = (uint32_t)crc32((uLong)crc, (const Bytef *)p, chunk);
        p += chunk;
        n -= chunk;
    }
    return crc;
#endif
}

#endif /* WALOGS_CRC_H */
