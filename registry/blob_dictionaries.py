"""The preset dictionaries of the compact row format (registry/blobs.py). Their bytes are part of
the stored data: a blob names the dictionary it was deflated with, so these never change. A better
dictionary is added under a new id beside them.

FEATURES_V1: four per-reading feature objects as the ingest stores them (a rejected, a defective and two
typical livers of the emulator's scene, graded by sqalfw.quality), compact JSON. RAW_V1: three samples
in the contract's compact binary encoding (docs/contract.md section 3.2).
"""

FEATURES_V1 = (
    b'{"tof":{"resolution":8,"valid_zones":64,"invalid_zones":0,"occupied_zones":19,"zone_w_mm":37.5,"'
    b'zone_h_mm":22.5,"volume_cm3":449.719,"weight_g":425.884,"height_mean_mm":28.053,"height_max_mm":'
    b'50.0,"height_min_mm":3.0,"height_sd_mm":15.612,"height_median_mm":23.0,"uniformity":0.641,"defec'
    b'ts":[],"score":0.367,"grade":"REJECT"},"spectral":{"ratios":{"F1/F7":0.374,"NIR/F1":2.277,"(F5+F'
    b'6)/(F1+F2)":2.287,"(F7+F8)/F4":0.69,"(F1+F2)/(F7+F8)":0.531,"(F1+F3)/(F5+F6)":0.405},"ratio_scor'
    b'es":{"F1/F7":1.0,"NIR/F1":0.3,"(F5+F6)/(F1+F2)":0.3,"(F7+F8)/F4":0.3,"(F1+F2)/(F7+F8)":1.0,"(F1+'
    b'F3)/(F5+F6)":0.714},"freshness":1.0,"fat_quality":0.466,"oxidation":0.534,"color_uniformity":0.3'
    b',"anomalies":["ratio NIR/F1 out of band","ratio (F5+F6)/(F1+F2) out of band","ratio (F7+F8)/F4 o'
    b'ut of band"],"score":0.32,"grade":"REJECT"},"reject_reasons":["tof: score below 0.45","spectral:'
    b' score below 0.45"],"clock":{"device_ts":1796532273398,"skew_ms":12,"flags":["late"]}}{"tof":{"r'
    b'esolution":8,"valid_zones":64,"invalid_zones":0,"occupied_zones":19,"zone_w_mm":37.5,"zone_h_mm"'
    b':22.5,"volume_cm3":449.719,"weight_g":425.884,"height_mean_mm":28.053,"height_max_mm":50.0,"heig'
    b'ht_min_mm":3.0,"height_sd_mm":15.612,"height_median_mm":23.0,"uniformity":0.641,"defects":[],"sc'
    b'ore":0.367,"grade":"REJECT"},"spectral":{"ratios":{"F1/F7":0.374,"NIR/F1":2.277,"(F5+F6)/(F1+F2)'
    b'":2.287,"(F7+F8)/F4":0.69,"(F1+F2)/(F7+F8)":0.531,"(F1+F3)/(F5+F6)":0.405},"ratio_scores":{"F1/F'
    b'7":1.0,"NIR/F1":0.3,"(F5+F6)/(F1+F2)":0.3,"(F7+F8)/F4":0.3,"(F1+F2)/(F7+F8)":1.0,"(F1+F3)/(F5+F6'
    b')":0.714},"freshness":1.0,"fat_quality":0.466,"oxidation":0.534,"color_uniformity":0.3,"anomalie'
    b's":["ratio NIR/F1 out of band","ratio (F5+F6)/(F1+F2) out of band","ratio (F7+F8)/F4 out of band'
    b'"],"score":0.32,"grade":"REJECT"},"reject_reasons":["tof: score below 0.45","spectral: score bel'
    b'ow 0.45"],"clock":{"device_ts":1796532273398,"skew_ms":12,"flags":[]}}{"tof":{"resolution":8,"va'
    b'lid_zones":64,"invalid_zones":0,"occupied_zones":19,"zone_w_mm":37.5,"zone_h_mm":22.5,"volume_cm'
    b'3":564.469,"weight_g":534.552,"height_mean_mm":35.211,"height_max_mm":64.0,"height_min_mm":4.0,"'
    b'height_sd_mm":18.515,"height_median_mm":36.0,"uniformity":0.595,"defects":[],"score":0.654,"grad'
    b'e":"B"},"spectral":{"ratios":{"F1/F7":0.357,"NIR/F1":1.822,"(F5+F6)/(F1+F2)":1.808,"(F7+F8)/F4":'
    b'0.857,"(F1+F2)/(F7+F8)":0.524,"(F1+F3)/(F5+F6)":0.505},"ratio_scores":{"F1/F7":1.0,"NIR/F1":0.96'
    b'7,"(F5+F6)/(F1+F2)":0.892,"(F7+F8)/F4":1.0,"(F1+F2)/(F7+F8)":1.0,"(F1+F3)/(F5+F6)":1.0},"freshne'
    b'ss":1.0,"fat_quality":1.0,"oxidation":0.0,"color_uniformity":0.892,"anomalies":[],"score":0.978,'
    b'"grade":"A+"},"reject_reasons":[],"clock":{"device_ts":1796532273398,"skew_ms":12,"flags":[]}}{"'
    b'tof":{"resolution":8,"valid_zones":61,"invalid_zones":3,"occupied_zones":17,"zone_w_mm":37.5,"zo'
    b'ne_h_mm":22.5,"volume_cm3":503.719,"weight_g":477.022,"height_mean_mm":35.118,"height_max_mm":64'
    b'.0,"height_min_mm":5.0,"height_sd_mm":18.746,"height_median_mm":33.0,"uniformity":0.561,"defects'
    b'":[],"score":0.521,"grade":"C"},"spectral":{"ratios":{"F1/F7":0.356,"NIR/F1":1.645,"(F5+F6)/(F1+'
    b'F2)":1.665,"(F7+F8)/F4":0.905,"(F1+F2)/(F7+F8)":0.531,"(F1+F3)/(F5+F6)":0.544},"ratio_scores":{"'
    b'F1/F7":1.0,"NIR/F1":1.0,"(F5+F6)/(F1+F2)":1.0,"(F7+F8)/F4":1.0,"(F1+F2)/(F7+F8)":1.0,"(F1+F3)/(F'
    b'5+F6)":1.0},"freshness":1.0,"fat_quality":1.0,"oxidation":0.0,"color_uniformity":1.0,"anomalies"'
    b':[],"score":1.0,"grade":"A+"},"reject_reasons":[],"clock":{"device_ts":1796532273398,"skew_ms":1'
    b'2,"flags":[]}}'
)

RAW_V1 = bytes.fromhex(
    "a50109080c000000cc760000f600ab49a201000074010f02c1011808f503ae020f04a5029116bb02031d570210455350"
    "33325f44454d4f5f4c4c5f303105302e312e30ca02025f0060005e005e005f005f0060005e005f00600050004a005e00"
    "6000610060005f005e0043002f0046005e005f0060005e005e00450025002a0059006100610060005f00570027002400"
    "49005f005e005f005f0060003e002a003f005e005f005e0060005f005a003900420061005e005e005f005f005f005c00"
    "5a005e005f00050505050505050505050505050505050505050505050505050505050505050505050505050505050509"
    "05050505050505050505050505050505050505050505a5010d080c000000cc760000f600ab49a20100005e01d7019a01"
    "be084c040a03a703620268141d03031d57021045535033325f4c494e455f4d545f303205302e312e30114c4f545f3230"
    "3236313230365f303030315c01045f005e00600060005e005e005f00600061005f005e0044005c00600060005f006000"
    "60004b00310048005f005f005e005e005e0049002f0037005e005e005e005e005f0053002e002d00550061005e005d00"
    "60005d003a002d004b0060005e005e0061006000540038004f005e0060005f005e005f00610055005e005f0060000505"
    "050505050505050505050505050505090505050505050505050505050505050505050505050505050505050505050505"
    "0505050509050505050505050505a5010d080c000000cc760000f600ab49a201000086013d02e101dd07ad0397023304"
    "bd025c187902031d57020f45535033325f5343414c455f30303705302e312e30114c4f545f32303236313230365f3030"
    "3132720300610060005f005d005e005f005f005f005e00580039003f005c005f005e0061005f005500290022003b0060"
    "005e005e005e005c002d001c0022004c005f005f0060005d004b0023001e003b005f005e00600060005e003f00290038"
    "005e005e005f00600060005f005000500061005f0060005f005e005e005d005e005f005f000505050505050505050505"
    "050505050505050505050505050505050505050505050505050505050505050505050509050505050505050505050505"
    "0505050505"
)
