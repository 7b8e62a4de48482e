# C types for the gateway's compiled copy of firmware/sqalfw/codec.py (see setup.py): the .py stays the
# only source of the contract; this file only tells Cython which names are C values and which
# functions it may call directly. A C type is given only where the value provably fits: the field
# kinds and flags of the check tables (0..5), lengths, indices and the tof resolution once checked.
# Every value read from a payload (boot, seq, ts, channels, distances...) stays a Python object, so
# a huge int is compared, reported and rejected exactly as the pure codec does.
# gateway/ingest/model.py uses the compiled copy only while it matches codec.py, and
# tests/gateway/test_ingest_codec_compiled.py compares the two on a corpus.
import cython

# private constants of the check tables; as C values they leave the module's namespace (nothing
# outside the codec reads them)
cdef int _I, _N, _B, _DEV, _LOT, _TXT
cdef str _ALNUM

# s is a str: every caller has checked type(s) is str
@cython.locals(c=cython.Py_UCS4)
cpdef bint _chars_ok(str s, str extra)

cpdef bint valid_device_id(s)

@cython.locals(i=cython.Py_ssize_t)
cpdef bint valid_lot_id(s)

cpdef bint _valid_cmd_id(s)

cpdef object _value(x, str path, int kind, lo, hi)

# obj stays untyped although it is always a dict by the time the body runs: a typed argument is
# checked when the call's arguments are evaluated, before _head() (an argument) could reject a
# non-object with the codec's reason (the corpus test caught this)
@cython.locals(kind=cython.int, flag=cython.int)
cpdef dict _fields(obj, tuple table, str prefix, dict out)

cpdef dict _obj(x, str path)

cpdef dict _head(obj, str what, topic_device_id, bint with_device=*)

cpdef object _one_of(x, str path, tuple allowed, str what)

# res is 4 or 8 once _fields has checked tof.res
@cython.locals(res=cython.Py_ssize_t, n=cython.Py_ssize_t, i=cython.Py_ssize_t)
cpdef dict validate_sample(s, topic_device_id=*)

# data is bytes or bytearray (_check_size): its length, offsets and byte values fit a Py_ssize_t
@cython.locals(total=cython.Py_ssize_t, i=cython.Py_ssize_t, ln=cython.Py_ssize_t, res=cython.Py_ssize_t,
               n=cython.Py_ssize_t, need=cython.Py_ssize_t, k=cython.Py_ssize_t)
cpdef dict _unpack_bin(data)
