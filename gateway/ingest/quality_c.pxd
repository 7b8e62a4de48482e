# C types for the gateway's compiled copy of firmware/sqalfw/quality.py (see setup.py): the .py stays
# the only source of the model; this file only tells Cython which locals are C ints and doubles.
# Python floats are C doubles, so every operation rounds the same (built with -ffp-contract=off);
# gateway/ingest/model.py uses the compiled copy only while it matches quality.py, and
# tests/gateway/test_ingest_model.py compares the two on a corpus.
import cython

@cython.locals(i=cython.Py_ssize_t, n_valid=cython.Py_ssize_t, n_occ=cython.Py_ssize_t,
               v=cython.double, hmax=cython.double, lim=cython.double, total=cython.double,
               base=cython.double, mean=cython.double, var=cython.double, sd=cython.double,
               x=cython.double, zw=cython.double, zh=cython.double, volume=cython.double,
               valid=list, h=list, occ=list, hs=list)
cpdef dict tof_features(distances_mm, statuses, resolution)

@cython.locals(i=cython.Py_ssize_t, n=cython.Py_ssize_t, total=cython.double, count=cython.Py_ssize_t,
               a=cython.double, b=cython.double)
cpdef double _uniformity(list h, list occ, Py_ssize_t res, double zw, double zh)

@cython.locals(i=cython.Py_ssize_t, t=cython.Py_ssize_t, j=cython.Py_ssize_t, k=cython.Py_ssize_t,
               at=cython.Py_ssize_t, hi=cython.double, v=cython.double, w=cython.double,
               top=cython.double, dev=cython.double, d=cython.double, scale=cython.double,
               below=cython.double, sev=cython.double, fb=cython.bint, g=bytes, out=list)
cpdef list _defects(list h, list valid, list occ, Py_ssize_t res, double med, double threshold)
