# The unix port's firmware grading another target's readings: for each sample payload in the file
# (one per line), decode it with the codec, grade its readings with sqalfw.quality as the Sampler
# does, and print the payload the codec makes of it ("REC <payload>"). Equal payloads mean equal
# firmware results from equal inputs, whatever made the inputs.
#   micropython emulation/qemu/regrade.py <payloads file>   (MICROPYPATH=firmware:<repo root>)
# Not frozen: run on the unix port only (emulation/qemu/compare.py).
import sys

from sqalfw import codec, quality


def main(path: str) -> None:
    with open(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\n")
            if not line:
                continue
            s = codec.decode_sample(line)
            sp = s["spec"]
            ch = {}
            for k in codec.CHANNELS:
                ch[k] = sp[k]
            ch["gain"] = sp["gain"]
            ch["atime"] = sp["atime"]
            ch["astep"] = sp["astep"]
            ch["saturated"] = sp["sat"]  # the driver's flag, as the Sampler passes it
            q = quality.analyze(s["tof"]["dist"], s["tof"]["st"], s["tof"]["res"], ch)
            s["q"] = {"score": q["score"], "grade": q["grade"]}
            print("REC " + codec.encode_sample(s).decode())
    print("DONE")


main(sys.argv[1])
