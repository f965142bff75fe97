//! Shared fixtures: realistic messages built field by field so positions are explicit.
#![allow(dead_code)]

use base64::Engine;

/// A segment with the given (field number, raw value) pairs; MSH numbering honoured.
pub fn seg(id: &str, fields: &[(usize, &str)]) -> String {
    let max = fields.iter().map(|(n, _)| *n).max().unwrap_or(0);
    if id == "MSH" {
        let mut v = vec![String::new(); max.saturating_sub(2)];
        for (n, value) in fields {
            assert!(*n >= 3);
            v[n - 3] = value.to_string();
        }
        format!("MSH|^~\\&|{}", v.join("|"))
    } else {
        let mut v = vec![String::new(); max];
        for (n, value) in fields {
            v[n - 1] = value.to_string();
        }
        format!("{id}|{}", v.join("|"))
    }
}

/// Joins segments with CR, the canonical form.
pub fn message(segments: &[String]) -> String {
    segments.iter().map(|s| format!("{s}\r")).collect()
}

pub fn msh(sending: &str, facility: &str, msg_type: &str, control: &str, version: &str) -> String {
    seg(
        "MSH",
        &[
            (3, sending),
            (4, facility),
            (5, "CLINIC_GW"),
            (6, "GW"),
            (7, "20240315101500"),
            (9, msg_type),
            (10, control),
            (11, "P"),
            (12, version),
        ],
    )
}

/// PID of an Indian patient with a +91 mobile written in several XTN styles.
pub fn indian_pid() -> String {
    seg(
        "PID",
        &[
            (1, "1"),
            (3, "AADHAAR-XXXX^^^UIDAI^NI~MRN-99812^^^SUNRISE^MR"),
            (5, "Sharma^Priya^K^^Mrs"),
            (7, "19880412"),
            (8, "F"),
            (11, "12 MG Road^^Bengaluru^KA^560001^IND"),
            (
                13,
                "^WPN^PH^^^080^41234567~^NET^Internet^priya@example.in~^ORN^CP^^91^98450^67890\
                 ~+91 98450-12345^PRN^CP~^PRN^CP^^^^^^^^^+919845011111",
            ),
            (15, "hi^Hindi^ISO639"),
        ],
    )
}

pub fn siu_s12() -> String {
    message(&[
        msh(
            "PRACTO_EMR",
            "SUNRISE_BLR",
            "SIU^S12^SIU_S12",
            "MSG00001",
            "2.5.1",
        ),
        seg(
            "SCH",
            &[
                (1, "PL778^EMR"),
                (2, "FL12345^EMR"),
                (6, "ROUTINE^Routine^HL70276"),
                (7, "KNEE^Knee pain follow-up"),
                (8, "FOLLOWUP^Follow-up^HL70277"),
                (9, "20"),
                (10, "min"),
                (11, "^^20^202403221030^202403221050"),
                (25, "Booked"),
            ],
        ),
        seg("TQ1", &[(1, "1"), (7, "202403221030"), (8, "202403221050")]),
        indian_pid(),
        seg("RGS", &[(1, "1")]),
        seg(
            "AIS",
            &[
                (1, "1"),
                (3, "CONSULT^Consultation"),
                (4, "202403221030"),
                (7, "20"),
                (8, "min"),
            ],
        ),
        seg(
            "AIL",
            &[
                (1, "1"),
                (3, "OPD-2^Room 5^^SUNRISE^^^Main Block^1^Orthopaedics OPD"),
                (6, "202403221030"),
            ],
        ),
        seg(
            "AIP",
            &[
                (1, "1"),
                (3, "DOC123^Rao^Anil^^^Dr^MS"),
                (4, "ATTENDING"),
                (6, "202403221030"),
            ],
        ),
    ])
}

/// A small but valid PDF (header, catalog, pages, one page, xref with real offsets, trailer).
pub fn minimal_pdf() -> Vec<u8> {
    let objects = [
        "1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n",
        "2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n",
        "3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>\nendobj\n",
    ];
    let mut pdf = String::from("%PDF-1.4\n");
    let mut offsets = Vec::new();
    for o in objects {
        offsets.push(pdf.len());
        pdf.push_str(o);
    }
    let xref = pdf.len();
    pdf.push_str("xref\n0 4\n0000000000 65535 f \n");
    for off in offsets {
        pdf.push_str(&format!("{off:010} 00000 n \n"));
    }
    pdf.push_str(&format!(
        "trailer\n<< /Size 4 /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    ));
    pdf.into_bytes()
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// ORU^R01 with a numeric result, a PDF split over two OBX and an RP link.
pub fn oru_r01(pdf: &[u8], status: &str) -> String {
    let data = b64(pdf);
    let (a, b) = data.split_at(data.len() / 2);
    // Senders wrap long base64 lines; the escaped line break must be ignored.
    let a = format!("{}\\.br\\{}", &a[..10], &a[10..]);
    let part1 = format!("METRO^AP^PDF^Base64^{a}");
    let part2 = format!("METRO^AP^PDF^Base64^{b}");
    message(&[
        msh("LIS", "METRO_LAB", "ORU^R01^ORU_R01", "LAB0001", "2.5.1"),
        seg(
            "PID",
            &[
                (1, "1"),
                (3, "LAB-55^^^METRO^MR"),
                (5, "Iyer^Ravi"),
                (13, "^PRN^CP^^91^^9876543210"),
            ],
        ),
        seg(
            "OBR",
            &[
                (1, "1"),
                (2, "ORD1"),
                (3, "FIL1"),
                (4, "CBC^Complete blood count^LN"),
                (7, "202403160830+0530"),
                (22, "202403160855"),
                (25, status),
            ],
        ),
        seg(
            "OBX",
            &[
                (1, "1"),
                (2, "NM"),
                (3, "718-7^Hemoglobin^LN"),
                (5, "13.5"),
                (6, "g/dL"),
                (11, "F"),
            ],
        ),
        seg(
            "OBX",
            &[
                (1, "2"),
                (2, "ED"),
                (3, "PDF^Report^L"),
                (4, "1"),
                (5, &part1),
                (11, "F"),
            ],
        ),
        seg(
            "OBX",
            &[
                (1, "3"),
                (2, "ED"),
                (3, "PDF^Report^L"),
                (4, "2"),
                (5, &part2),
                (11, "F"),
            ],
        ),
        seg(
            "OBX",
            &[
                (1, "4"),
                (2, "RP"),
                (3, "URL^Link^L"),
                (5, "https://lab.example.in/r/1^METRO^AP^PDF"),
                (11, "F"),
            ],
        ),
    ])
}

pub fn mdm_t02(pdf: &[u8]) -> String {
    let data = b64(pdf);
    message(&[
        msh("EMR", "SUNRISE_BLR", "MDM^T02^MDM_T02", "DOC77", "2.5"),
        seg("EVN", &[(1, "T02"), (2, "20240320120000")]),
        seg(
            "PID",
            &[
                (1, "1"),
                (3, "MRN-99812^^^SUNRISE^MR"),
                (5, "Sharma^Priya"),
                (13, "9845012345^PRN^CP"),
            ],
        ),
        seg("PV1", &[(1, "1"), (2, "O")]),
        seg(
            "TXA",
            &[
                (1, "1"),
                (2, "RX"),
                (3, "AP"),
                (4, "20240320115500"),
                (12, "RX-2024-001"),
                (17, "AU"),
            ],
        ),
        seg(
            "OBX",
            &[
                (1, "1"),
                (2, "ED"),
                (3, "RX^Prescription^L"),
                (5, &format!("^application^pdf^Base64^{data}")),
                (11, "F"),
            ],
        ),
    ])
}

pub fn adt_a03() -> String {
    message(&[
        msh("HIS", "CITY_HOSP", "ADT^A03^ADT_A03", "ADT1", "2.4"),
        seg(
            "EVN",
            &[(1, "A03"), (2, "20240321180000"), (4, "01^Discharged home")],
        ),
        seg(
            "PID",
            &[
                (1, "1"),
                (3, "H-1^^^CITY^MR"),
                (5, "Kumar^Arjun"),
                (13, "(0)98765 43210^PRN^PH"),
            ],
        ),
        seg(
            "PV1",
            &[
                (1, "1"),
                (2, "O"),
                (3, "OPD^3^^CITY"),
                (7, "DOC9^Menon^Lakshmi^^^Dr"),
                (10, "MED"),
                (19, "V-2024-889"),
                (44, "20240321093000"),
                (45, "20240321174500"),
            ],
        ),
    ])
}
