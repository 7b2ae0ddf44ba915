//! The city's counties and township offices, loaded from the demo jurisdiction file
//! (`data/zhangye-jurisdictions.json`, embedded at build time).
//!
//! Township codes are the 6-digit county code followed by the township's 1-based position
//! in that county's list (e.g. `620702001`). They are stable identifiers for this data set,
//! not official statistical codes.

use std::{collections::BTreeMap, sync::OnceLock};

use serde::Deserialize;

const DATA: &str = include_str!("../../../data/zhangye-jurisdictions.json");

/// A township judicial office (司法所).
#[derive(Debug, Clone, PartialEq)]
pub struct Township {
    pub code: String,
    pub name: String,
    pub county_code: String,
}

/// A county-level judicial bureau (县区司法局).
#[derive(Debug, Clone, PartialEq)]
pub struct County {
    pub code: String,
    pub name: String,
    pub name_en: String,
    /// Approximate seat location (latitude, longitude), WGS84 degrees.
    pub seat: (f64, f64),
    pub townships: Vec<Township>,
}

/// All counties and townships of the city.
#[derive(Debug)]
pub struct Directory {
    pub city_name: String,
    pub time_zone: chrono_tz::Tz,
    counties: BTreeMap<String, County>,
    townships: BTreeMap<String, Township>,
}

#[derive(Deserialize)]
struct RawFile {
    city: RawCity,
    counties: Vec<RawCounty>,
}

#[derive(Deserialize)]
struct RawCity {
    name: String,
    time_zone: String,
}

#[derive(Deserialize)]
struct RawCounty {
    code: String,
    name: String,
    name_en: String,
    seat: (f64, f64),
    townships: Vec<String>,
}

impl Directory {
    /// The embedded directory (parsed once).
    pub fn get() -> &'static Directory {
        static DIRECTORY: OnceLock<Directory> = OnceLock::new();
        DIRECTORY.get_or_init(|| Self::parse(DATA).expect("embedded jurisdiction file is valid"))
    }

    fn parse(data: &str) -> anyhow::Result<Self> {
        let raw: RawFile = serde_json::from_str(data)?;
        let time_zone = raw
            .city
            .time_zone
            .parse()
            .map_err(|e| anyhow::anyhow!("time zone: {e}"))?;
        let mut counties = BTreeMap::new();
        let mut townships = BTreeMap::new();
        for county in raw.counties {
            let list: Vec<Township> = county
                .townships
                .iter()
                .enumerate()
                .map(|(index, name)| Township {
                    code: format!("{}{:03}", county.code, index + 1),
                    name: name.clone(),
                    county_code: county.code.clone(),
                })
                .collect();
            for township in &list {
                townships.insert(township.code.clone(), township.clone());
            }
            counties.insert(
                county.code.clone(),
                County {
                    code: county.code,
                    name: county.name,
                    name_en: county.name_en,
                    seat: county.seat,
                    townships: list,
                },
            );
        }
        Ok(Self {
            city_name: raw.city.name,
            time_zone,
            counties,
            townships,
        })
    }

    pub fn township(&self, code: &str) -> Option<&Township> {
        self.townships.get(code)
    }

    pub fn county(&self, code: &str) -> Option<&County> {
        self.counties.get(code)
    }

    pub fn counties(&self) -> impl Iterator<Item = &County> {
        self.counties.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_directory_has_codes_and_counties() {
        let directory = Directory::get();
        assert_eq!(directory.time_zone, chrono_tz::Asia::Shanghai);
        let ganzhou = directory.county("620702").expect("Ganzhou");
        assert_eq!(ganzhou.townships[0].code, "620702001");
        assert_eq!(ganzhou.townships[0].name, "东街街道");
        let township = directory.township("620721002").expect("Sunan second township");
        assert_eq!(township.name, "皇城镇");
        assert_eq!(township.county_code, "620721");
        assert!(directory.township("620702999").is_none());
    }
}
