# The SQAL boot loader and update installer: the part of the firmware that is never updated over
# the air. It is frozen into the image (firmware/manifest.py) and is never put in an application
# slot, so that no release, good or bad, can break the code that picks a slot and rolls back.
#
#   slots.py    ota.json (which slot boots, probation, the floor version), the reset cause, the
#               slot selection at boot, confirmation, rollback
#   install.py  an update: the signed manifest, the files into the inactive slot, their sizes and
#               SHA-256, the atomic switch (ota_dl.json: the download in progress)
#   ed25519.py  the release signature (Ed25519 over the manifest's SHA-256)
#   run.py      the entry points' boot: select the slot, import the application from it, run it,
#               and on a probation boot watch the health check's deadline
#
# Slots: "factory" is the application frozen in the image (sqalfw, as built); "a" and "b" are
# directories on flash (ota/a, ota/b), each holding a whole sqalfw package as .mpy files plus the
# release's manifest.json and manifest.sig. docs/ota.md has the design.
