# Lot quality profiles of the product scene (domain.md section 3). Each sample draws freshness,
# fat quality and oxidation as Normal(mean, 0.08) clipped to 0..1 around its profile's means.

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

# Defect probabilities per sample (*choice*: worse lots carry more defects):
# (foreign body, deformation, edge damage, optical inconsistency)
DEFECT_RATES = {
    "premium": (0.0, 0.02, 0.02, 0.02),
    "good": (0.005, 0.04, 0.04, 0.03),
    "acceptable": (0.01, 0.08, 0.08, 0.05),
    "low": (0.03, 0.20, 0.15, 0.08),
    "defective": (0.15, 0.45, 0.35, 0.15),
}
# overall strength of the quality -> spectrum coupling (*choice*, calibrated against sqalfw.quality)
K = 0.9
DEFECTS = ("foreign_body", "deformation", "edge_damage", "optical")


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


def spectral_factors(freshness, fat, oxidation):
    """Multiplicative factor per AS7341 channel around the reference counts (the reference liver
    is fresh, fat-rich and unoxidised). Aging (1 - freshness) lowers F1-F3, F7, F8 and Clear and
    raises F4, F5 and NIR; oxidation raises F6 and F4 and lowers F7 and F8; poor fat quality
    (1 - fat) yellows the liver: F5/F6 up, F4 up. Coefficients are a *choice*, tuned so that the
    quality model's ratios leave their bands in the order the profiles expect."""
    a = K * (1.0 - freshness)
    o = K * oxidation
    l = K * (1.0 - fat)
    return {
        "F1": 1.0 - 0.55 * a,
        "F2": 1.0 - 0.45 * a,
        "F3": 1.0 - 0.40 * a,
        "F4": 1.0 + 0.15 * a + 0.30 * o + 0.25 * l,
        "F5": 1.0 + 0.10 * a + 0.25 * l,
        "F6": 1.0 + 0.45 * o + 0.25 * l,
        "F7": 1.0 - 0.10 * a - 0.30 * o,
        "F8": 1.0 - 0.10 * a - 0.30 * o,
        "CLEAR": 1.0 - 0.25 * a,
        "NIR": 1.0 + 0.05 * a,
    }
