# Lot quality profiles of the product scene (domain.md section 3). Each sample draws freshness,
# fat quality and oxidation as Normal(mean, 0.08) clipped to 0..1 around its profile's means, and
# those three values drive the whole liver: its spectrum AND its size, firmness and defects (a
# *choice*, calibrated together with sqalfw.quality: see docs/emulation.md "Calibration").
import math

# the same piecewise-linear lookup as the quality model (pure arithmetic, no grading logic shared)
from sqalfw.quality import interp

PROFILES = {
    # name: (freshness, fat quality, oxidation)
    "premium": (0.95, 0.95, 0.05),
    "good": (0.85, 0.85, 0.15),
    "acceptable": (0.70, 0.70, 0.30),
    "low": (0.55, 0.55, 0.45),
    "defective": (0.35, 0.35, 0.65),
}
SD = 0.08
# the "default" profile is this mix of sample qualities (percent)
DEFAULT_MIX = (("premium", 15), ("good", 40), ("acceptable", 30), ("low", 10), ("defective", 5))

# Defect probabilities per sample (*choice*: worse lots carry more defects; premium rarely, a
# defective lot often): (foreign body, deformation, edge damage, optical inconsistency)
DEFECT_RATES = {
    "premium": (0.0, 0.02, 0.02, 0.02),
    "good": (0.005, 0.04, 0.04, 0.03),
    "acceptable": (0.01, 0.08, 0.08, 0.05),
    "low": (0.03, 0.15, 0.12, 0.08),
    "defective": (0.15, 0.45, 0.35, 0.15),
}
DEFECTS = ("foreign_body", "deformation", "edge_damage", "optical")

# --- geometry from the liver's condition (*choice*) -------------------------------------------
# condition = mean of freshness, fat quality and (1 - oxidation). A well-fattened, fresh liver is
# big and firm (holds a tall dome); a poor one is small and soft (slumps). Piecewise linear in the
# condition; the "extra" size class (650-700 g) belongs to premium livers only.
WEIGHT_G = ((0.0, 450.0), (0.35, 470.0), (0.55, 480.0), (0.70, 520.0), (0.85, 550.0), (0.95, 665.0),
            (1.0, 690.0))
WEIGHT_SD = 0.05        # relative spread of weight at a given condition
HEIGHT_MM = ((0.0, 50.0), (0.35, 54.0), (0.55, 59.0), (0.70, 62.0), (0.85, 66.0), (0.95, 78.0),
             (1.0, 80.0))
HEIGHT_SD = 2.0         # mm
DENSITY = 0.947         # g/cm3, the density sqalfw.quality uses (domain.md section 1)

# --- spectrum from the three qualities (*choice*) ---------------------------------------------
# Each quality value q maps to a band position: 0 = every ratio at the centre of its optimal band
# (the reference liver), ~1 = near the optimal band's edge, ~2 = near the acceptable band's edge,
# beyond = outside. Profile means land at premium ~0.3, good ~0.9, acceptable ~1.4, low ~1.85,
# defective ~2.7.
POSITION = ((0.0, 3.6), (0.35, 2.7), (0.55, 1.85), (0.70, 1.3), (0.85, 0.9), (1.0, 0.0))
# log change of each channel per unit of position, by cause. Signs are domain.md's physical
# directions: aging (from freshness) lowers F1-F3, F7, F8, Clear and raises F4, F5, NIR; oxidation
# raises F6 and F4 and lowers F7, F8; poor fat yellows the liver (F4-F6 up). Sizes (with the three
# positions equal) put the acceptable-band edges where the grades need them: NIR/F1 leaves its
# band near 1.5 and the colour ratio (F5+F6)/(F1+F2) near 1.55 (a "low" liver carries these two
# anomalies), (F7+F8)/F4 and (F1+F3)/(F5+F6) near 2.2 (only defective livers lose them).
# Within these directions F1/F7 and (F1+F2)/(F7+F8) hardly move: both bands allow F1/F7 only a
# few percent before NIR/F1 or (F7+F8)/F4 would leave theirs, so freshness stays ~1.0 and the
# spectrum grades through fat quality, colour and anomalies.
AGING = {"F1": -0.06, "F2": -0.11, "F3": -0.09, "F4": 0.01, "F5": 0.06, "F7": -0.04, "F8": -0.04,
         "CLEAR": -0.10, "NIR": 0.13}
OXIDATION = {"F4": 0.04, "F6": 0.08, "F7": -0.05, "F8": -0.05}
POOR_FAT = {"F4": 0.02, "F5": 0.03, "F6": 0.03}
CHANNELS = ("F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "CLEAR", "NIR")


def names():
    return ("default",) + tuple(sorted(PROFILES))


def check(profile):
    """Return the profile name if known, else raise ValueError naming the choices."""
    if profile != "default" and profile not in PROFILES:
        raise ValueError("profile %r unknown; choose one of %s" % (profile, ", ".join(names())))
    return profile


def pick(profile, u):
    """The sample's profile for a lot profile; u in [0, 1) draws from the default mix."""
    if profile != "default":
        return profile
    acc = 0.0
    for name, pct in DEFAULT_MIX:
        acc += pct / 100.0
        if u < acc:
            return name
    return DEFAULT_MIX[-1][0]


def condition(freshness, fat, oxidation):
    return (freshness + fat + 1.0 - oxidation) / 3.0


def position(q):
    """Band position of a quality value (1 = best); see POSITION."""
    return interp(q, POSITION)


def spectral_factors(freshness, fat, oxidation):
    """Multiplicative factor per AS7341 channel around the reference counts (the reference liver
    is fresh, fat-rich and unoxidised: its ratios sit at the centre of their optimal bands)."""
    # each cause is read half from its own quality, half from the liver's overall condition: the
    # whole liver ages together, so its bands move together (less scatter within a profile)
    cond = condition(freshness, fat, oxidation)
    causes = ((AGING, position(0.5 * (freshness + cond))),
              (OXIDATION, position(0.5 * (1.0 - oxidation + cond))),
              (POOR_FAT, position(0.5 * (fat + cond))))
    out = {}
    for ch in CHANNELS:
        x = 0.0
        for table, p in causes:
            x += table.get(ch, 0.0) * p
        out[ch] = math.exp(x)
    return out
