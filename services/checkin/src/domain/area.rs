//! The permitted area (geofence) of a township: the circles it is made of, the test of a
//! position against them (the benefit of the doubt to the supervisee), and the default area
//! around the county seat for townships that have set none.

use chrono::{DateTime, Utc};
use mesh_kit::{error::ServiceError, jurisdiction::Directory};

use super::{Jurisdiction, Position};

/// Most circles in one permitted area.
pub const MAX_AREA_CIRCLES: usize = 20;
/// Smallest and largest permitted-area radius, in metres. A circle smaller than a phone's
/// usual GPS error flags honest check-ins; one larger than a county is no fence at all.
pub const MIN_RADIUS_M: f64 = 50.0;
pub const MAX_RADIUS_M: f64 = 100_000.0;
/// Mean Earth radius (IUGG), metres: haversine's error is well under the GPS accuracy.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// One circle of a permitted area.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Circle {
    pub latitude: f64,
    pub longitude: f64,
    pub radius_m: f64,
}

/// Outcome of the permitted-area test for one position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AreaCheck {
    pub out_of_area: bool,
    /// Metres beyond the edge of the nearest circle; 0 unless out of area.
    pub distance_outside_m: f64,
}

impl AreaCheck {
    /// Inside the area, or not tested (no position, no fence).
    pub const INSIDE: AreaCheck = AreaCheck {
        out_of_area: false,
        distance_outside_m: 0.0,
    };
}

/// Great-circle distance in metres between two WGS84 positions (haversine).
pub fn haversine_m(from_lat: f64, from_lon: f64, to_lat: f64, to_lon: f64) -> f64 {
    let (phi1, phi2) = (from_lat.to_radians(), to_lat.to_radians());
    let d_phi = (to_lat - from_lat).to_radians();
    let d_lambda = (to_lon - from_lon).to_radians();
    let a = (d_phi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (d_lambda / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// Whether `position` lies outside the area made of `circles`. The benefit of the doubt
/// goes to the supervisee: out of area only when the position is beyond every circle's
/// edge by more than the device's reported accuracy. No circles means no fence.
pub fn check_area(position: &Position, circles: &[Circle]) -> AreaCheck {
    let beyond_nearest_edge = circles
        .iter()
        .map(|circle| {
            haversine_m(
                position.latitude,
                position.longitude,
                circle.latitude,
                circle.longitude,
            ) - circle.radius_m
        })
        .fold(f64::INFINITY, f64::min);
    if beyond_nearest_edge.is_finite() && beyond_nearest_edge > position.accuracy_m {
        AreaCheck {
            out_of_area: true,
            distance_outside_m: beyond_nearest_edge,
        }
    } else {
        AreaCheck::INSIDE
    }
}

/// Who set a township's permitted area last, and how many times it has been set.
#[derive(Debug, Clone, PartialEq)]
pub struct AreaVersion {
    pub version: i64,
    pub updated_by_subject: String,
    pub updated_by_role: String,
    pub updated_at: DateTime<Utc>,
}

/// The area a township's check-ins are tested against.
#[derive(Debug, Clone, PartialEq)]
pub struct PermittedArea {
    pub jurisdiction: Jurisdiction,
    pub circles: Vec<Circle>,
    /// `None` for the configured default: never set for this township.
    pub set: Option<AreaVersion>,
}

/// No area was set for the township and no default applies.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("no permitted area is set for this township")]
pub struct NoPermittedArea;

impl From<NoPermittedArea> for ServiceError {
    fn from(error: NoPermittedArea) -> Self {
        ServiceError::not_found(error.to_string())
    }
}

/// Where supervisees may be when a township has set no area of its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AreaPolicy {
    /// Radius of the default area around the county seat; 0 disables it.
    pub default_radius_m: f64,
}

impl AreaPolicy {
    /// The default area of a county's townships: a circle around the county seat, or none.
    pub fn default_area(&self, county_code: &str) -> Vec<Circle> {
        if self.default_radius_m <= 0.0 {
            return Vec::new();
        }
        Directory::get()
            .county(county_code)
            .map(|county| {
                vec![Circle {
                    latitude: county.seat.0,
                    longitude: county.seat.1,
                    radius_m: self.default_radius_m,
                }]
            })
            .unwrap_or_default()
    }

    /// The circles check-ins are tested against: the township's own (`set`), else the
    /// default around its county seat.
    pub fn circles(&self, set: Vec<Circle>, county_code: &str) -> Vec<Circle> {
        if set.is_empty() {
            self.default_area(county_code)
        } else {
            set
        }
    }

    /// The permitted area of a township, from what was `stored` for it (if ever set).
    pub fn area(
        &self,
        jurisdiction: Jurisdiction,
        stored: Option<(AreaVersion, Vec<Circle>)>,
    ) -> Result<PermittedArea, NoPermittedArea> {
        let (set, circles) = match stored {
            Some((version, circles)) => (Some(version), self.circles(circles, &jurisdiction.county_code)),
            None => (None, self.default_area(&jurisdiction.county_code)),
        };
        if circles.is_empty() {
            return Err(NoPermittedArea);
        }
        Ok(PermittedArea {
            jurisdiction,
            circles,
            set,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::{jurisdiction, now};

    #[test]
    fn haversine_matches_known_distances() {
        // One degree of latitude is about 111.2 km.
        let degree = haversine_m(38.0, 100.0, 39.0, 100.0);
        assert!((degree - 111_195.0).abs() < 50.0, "{degree}");
        assert_eq!(haversine_m(38.93, 100.45, 38.93, 100.45), 0.0);
        // Beijing to Shanghai, about 1068 km.
        let far = haversine_m(39.9042, 116.4074, 31.2304, 121.4737);
        assert!((far - 1_067_000.0).abs() < 5_000.0, "{far}");
    }

    #[test]
    fn area_check_gives_the_benefit_of_the_doubt() {
        let circles = [
            Circle {
                latitude: 38.0,
                longitude: 100.0,
                radius_m: 1_000.0,
            },
            Circle {
                latitude: 39.0,
                longitude: 100.0,
                radius_m: 5_000.0,
            },
        ];
        let at = |latitude, accuracy_m| Position {
            latitude,
            longitude: 100.0,
            accuracy_m,
        };
        // Inside the first circle.
        assert!(!check_area(&at(38.005, 0.0), &circles).out_of_area);
        // About 111 m beyond the first circle's edge: flagged with a precise accuracy,
        // not with a coarse one that covers the gap.
        let beyond = at(38.0 + 1_111.95 / 111_195.0, 10.0);
        let check = check_area(&beyond, &circles);
        assert!(check.out_of_area);
        assert!((check.distance_outside_m - 111.95).abs() < 1.0, "{check:?}");
        assert!(!check_area(&at(beyond.latitude, 200.0), &circles).out_of_area);
        // The nearest circle's edge counts: 10 km north of the second centre is 5 km out.
        let north = at(39.0 + 10_000.0 / 111_195.0, 0.0);
        let check = check_area(&north, &circles);
        assert!((check.distance_outside_m - 5_000.0).abs() < 5.0, "{check:?}");
        // No circles: no fence.
        assert_eq!(check_area(&north, &[]), AreaCheck::INSIDE);
    }

    #[test]
    fn a_township_without_an_area_falls_back_to_the_county_seat() {
        let policy = AreaPolicy {
            default_radius_m: 60_000.0,
        };
        let default = policy.default_area("620702");
        assert_eq!(default.len(), 1);
        assert_eq!(default[0].radius_m, 60_000.0);
        assert!(policy.default_area("999999").is_empty(), "unknown county");
        let own = vec![Circle {
            latitude: 38.9,
            longitude: 100.4,
            radius_m: 500.0,
        }];
        assert_eq!(policy.circles(own.clone(), "620702"), own);
        assert_eq!(policy.circles(Vec::new(), "620702"), default);

        let shown = policy.area(jurisdiction(), None).expect("the default");
        assert_eq!((shown.circles, shown.set), (default, None));
        let disabled = AreaPolicy {
            default_radius_m: 0.0,
        };
        assert_eq!(disabled.area(jurisdiction(), None), Err(NoPermittedArea));
        let version = AreaVersion {
            version: 2,
            updated_by_subject: "office".into(),
            updated_by_role: "township_office".into(),
            updated_at: now(),
        };
        let set = disabled
            .area(jurisdiction(), Some((version.clone(), own.clone())))
            .expect("set");
        assert_eq!((set.circles, set.set), (own, Some(version)));
    }
}
