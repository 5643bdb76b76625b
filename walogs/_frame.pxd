# C-level API of walogs._frame for the compiled writer (walogs._writer).
# Cython exports these through the module's capsule table, so the writer
# builds frames, VISIBLE and in-flight records with the codec's own code: one CRC
# implementation, one layout (walogs._format, docs/format.md).

from libc.stdint cimport uint32_t, uint64_t

cdef void build_frame(unsigned char *dst, const unsigned char *src, size_t size, uint64_t lsn) noexcept nogil
cdef void build_visible(unsigned char *dst, uint32_t state, uint32_t seq, uint64_t lsn, uint64_t offset) noexcept nogil
cdef void build_in_flight(unsigned char *dst, const unsigned char *boot, uint64_t seq, uint64_t start,
                          uint64_t end) noexcept nogil
cdef object entry_view(object data)
