"""A generated eCH-0020 3.0 message for the demo when ../shared/ech/samples is absent.

No public eCH-0020 v3 message exists; this one is built for the demo with a fictitious
person (``Muster Anna``, a dummy AHV number) and validates against eCH-0020-3-0.xsd.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from .samples import Sample

NAMESPACE = "http://www.ech.ch/xmlns/eCH-0020/3"

_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<e20:delivery xmlns:e20="http://www.ech.ch/xmlns/eCH-0020/3" xmlns:e11="http://www.ech.ch/xmlns/eCH-0011/8"
 xmlns:e10="http://www.ech.ch/xmlns/eCH-0010/5" xmlns:e8="http://www.ech.ch/xmlns/eCH-0008/3"
 xmlns:e21="http://www.ech.ch/xmlns/eCH-0021/7" xmlns:e44="http://www.ech.ch/xmlns/eCH-0044/4"
 xmlns:e7="http://www.ech.ch/xmlns/eCH-0007/5" xmlns:e58="http://www.ech.ch/xmlns/eCH-0058/5" version="3.0">
 <e20:deliveryHeader>
  <e58:senderId>sedex://1-1061-1</e58:senderId>
  <e58:messageId>{message_id}</e58:messageId>
  <e58:messageType>20001</e58:messageType>
  <e58:sendingApplication><e58:manufacturer>Drehscheibe</e58:manufacturer><e58:product>demo</e58:product><e58:productVersion>0.1</e58:productVersion></e58:sendingApplication>
  <e58:messageDate>{now}</e58:messageDate>
  <e58:eventDate>{today}</e58:eventDate>
  <e58:action>1</e58:action>
  <e58:testDeliveryFlag>true</e58:testDeliveryFlag>
  <e20:dataLock>0</e20:dataLock>
 </e20:deliveryHeader>
 <e20:baseDelivery><e20:messages>
  <e20:baseDeliveryPerson>
   <e20:personIdentification>
    <e44:vn>7560000000002</e44:vn>
    <e44:localPersonId><e44:personIdCategory>LU.DEMO</e44:personIdCategory><e44:personId>1</e44:personId></e44:localPersonId>
    <e44:officialName>Muster</e44:officialName><e44:firstName>Anna</e44:firstName><e44:sex>2</e44:sex>
    <e44:dateOfBirth><e44:yearMonthDay>1990-01-01</e44:yearMonthDay></e44:dateOfBirth>
   </e20:personIdentification>
   <e20:nameInfo><e20:nameData><e11:officialName>Muster</e11:officialName><e11:firstName>Anna</e11:firstName></e20:nameData></e20:nameInfo>
   <e20:birthInfo><e20:birthData><e11:dateOfBirth><e44:yearMonthDay>1990-01-01</e44:yearMonthDay></e11:dateOfBirth>
    <e11:placeOfBirth><e11:unknown>0</e11:unknown></e11:placeOfBirth><e11:sex>2</e11:sex></e20:birthData></e20:birthInfo>
   <e20:religionData><e11:religion>000</e11:religion></e20:religionData>
   <e20:maritalInfo><e20:maritalData><e11:maritalStatus>1</e11:maritalStatus></e20:maritalData></e20:maritalInfo>
   <e20:nationalityData><e11:nationalityStatus>2</e11:nationalityStatus><e11:countryInfo><e11:country>
    <e8:countryId>8100</e8:countryId><e8:countryIdISO2>CH</e8:countryIdISO2><e8:countryNameShort>Schweiz</e8:countryNameShort></e11:country></e11:countryInfo></e20:nationalityData>
   <e20:personAdditionalData><e21:languageOfCorrespondance>de</e21:languageOfCorrespondance></e20:personAdditionalData>
   <e20:placeOfOriginInfo><e20:placeOfOrigin><e11:originName>Luzern</e11:originName><e11:canton>LU</e11:canton></e20:placeOfOrigin></e20:placeOfOriginInfo>
   <e20:lockData><e21:dataLock>0</e21:dataLock><e21:paperLock>0</e21:paperLock></e20:lockData>
  </e20:baseDeliveryPerson>
  <e20:hasMainResidence>
   <e20:reportingMunicipality><e7:municipalityId>1061</e7:municipalityId><e7:municipalityName>Luzern</e7:municipalityName><e7:cantonAbbreviation>LU</e7:cantonAbbreviation></e20:reportingMunicipality>
   <e20:arrivalDate>2020-01-01</e20:arrivalDate>
   <e20:comesFrom><e11:unknown>0</e11:unknown></e20:comesFrom>
   <e20:dwellingAddress><e11:householdID>1</e11:householdID><e11:address><e10:street>Musterstrasse</e10:street>
    <e10:town>Luzern</e10:town><e10:swissZipCode>6000</e10:swissZipCode><e10:country>CH</e10:country></e11:address>
    <e11:typeOfHousehold>1</e11:typeOfHousehold></e20:dwellingAddress>
  </e20:hasMainResidence>
 </e20:messages></e20:baseDelivery>
</e20:delivery>
"""


def generated_ech0020_v3_bytes(message_id: str = "demo-1", now: datetime | None = None) -> bytes:
    now = now or datetime.now(timezone.utc)
    return _TEMPLATE.format(message_id=message_id, now=now.strftime("%Y-%m-%dT%H:%M:%S"), today=now.strftime("%Y-%m-%d")).encode()


def generated_ech0020_v3(directory: Path) -> Sample:
    """Write the generated message into ``directory`` and describe it like a real sample."""
    path = Path(directory) / "generated" / "data_generated-ech0020-v3.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(generated_ech0020_v3_bytes())
    return Sample("generated/eCH-0020-3.0", path, None, NAMESPACE)
