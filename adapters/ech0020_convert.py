"""eCH-0020 2.x (namespace eCH-0020/2) to 3.0 conversion, in Python on the lxml tree.

The mapping was worked out by comparing ``eCH-0020-2-3.xsd`` with ``eCH-0020-3-0.xsd`` and
the component schemas each imports (2.3: eCH-0044/1, eCH-0011/4, eCH-0010/3, eCH-0021/3,
eCH-0007/4, eCH-0008/2, header eCH-0078/2; 3.0: eCH-0044/4, eCH-0011/8, eCH-0010/5,
eCH-0021/7, eCH-0007/5, eCH-0008/3, header eCH-0058/5), then validating converted real
samples and fixing what the validator reported. The structural differences handled:

* the header is eCH-0058/5 (via ``eCH-0020:headerType``); ``eventDate`` becomes an
  ``xs:date``; ``extension/dataLock`` becomes the header's ``dataLock``;
* 2.x persons are an eCH-0011 ``personType`` with ``coredata``; 3.0 persons are flat
  groups (``nameInfo``, ``birthInfo``, ``religionData``, ``maritalInfo``,
  ``nationalityData``, ``placeOfOriginInfo``/``residencePermitData``, ``lockData``);
* ``baseDelivery`` loses ``numberOfMessages`` and has one ``messages`` per person;
* dwelling addresses lose the ``withoutEGID`` wrapper; residences lose the
  ``mainResidence``/``secondaryResidence`` wrapper;
* simple events (move, moveOut, contact, death, changeName) carry a bare
  eCH-0044 person identification instead of a wrapper;
* a birth's child becomes a 3.0 ``birthPerson`` with the marital status a newborn has
  (single) made explicit; the parents (``mother``/``father``) are refused, because 3.0
  requires their custody (``care``), which 2.x does not carry.

Anything outside that mapping raises :class:`ConversionUnavailable`; the converter never
guesses. Error messages name elements, never their content (personal data).
"""

from __future__ import annotations

from collections.abc import Callable

from lxml import etree

from .base import ConversionUnavailable

E = "http://www.ech.ch/xmlns/"
V2 = {
    "e20": E + "eCH-0020/2",
    "e11": E + "eCH-0011/4",
    "e10": E + "eCH-0010/3",
    "e8": E + "eCH-0008/2",
    "e21": E + "eCH-0021/3",
    "e44": E + "eCH-0044/1",
    "e7": E + "eCH-0007/4",
    "e78": E + "eCH-0078/2",
    "e58": E + "eCH-0058/2",
}
V3 = {
    "e20": E + "eCH-0020/3",
    "e11": E + "eCH-0011/8",
    "e10": E + "eCH-0010/5",
    "e8": E + "eCH-0008/3",
    "e21": E + "eCH-0021/7",
    "e44": E + "eCH-0044/4",
    "e7": E + "eCH-0007/5",
    "e58": E + "eCH-0058/5",
    "e6": E + "eCH-0006/2",
}
# Component namespaces whose types kept their shape between the two releases: a subtree in
# one of them is copied with the namespace renamed.
_RENAME = {
    V2["e10"]: V3["e10"],
    V2["e8"]: V3["e8"],
    V2["e7"]: V3["e7"],
    V2["e11"]: V3["e11"],
    V2["e44"]: V3["e44"],
    V2["e58"]: V3["e58"],
    V2["e78"]: V3["e58"],
    V2["e21"]: V3["e21"],
}

# Events the standard changed so that 3.0 needs data 2.x does not carry: refused with the reason.
REFUSED_EVENTS = {
    "changeResidencePermit": "3.0 types it as an entry-residence-permit event, a mapping not implemented here",
}

CONVERTIBLE_EVENTS = ("baseDelivery", "moveIn", "move", "moveOut", "contact", "death", "changeName", "birth")

# 2.x name fields (eCH-0011/4 or eCH-0020/2) and their eCH-0011/8 nameData names, in 3.0 order.
_OPTIONAL_NAMES = (("originalName", "originalName"), ("alliancePartnershipName", "allianceName"),
                   ("aliasName", "aliasName"), ("otherName", "otherName"), ("callName", "callName"))

# eCH-0011 maritalStatus 1 = ledig (single).
_SINGLE = "1"


def _q(prefix: str, name: str) -> str:
    return f"{{{V3[prefix]}}}{name}"


def _sub(parent: etree._Element, prefix: str, name: str, text: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, _q(prefix, name))
    if text is not None:
        child.text = text
    return child


def _find(el: etree._Element | None, path: str) -> etree._Element | None:
    return None if el is None else el.find(path, V2)


def _text(el: etree._Element | None, path: str) -> str | None:
    found = _find(el, path)
    if found is None or found.text is None:
        return None
    return found.text.strip()


def _copy(el: etree._Element, rename: dict[str, str] | None = None) -> etree._Element:
    """Deep copy with v2 component namespaces renamed to their v3 counterparts."""
    clone = etree.fromstring(etree.tostring(el))
    for node in clone.iter():
        if not isinstance(node.tag, str):
            continue
        q = etree.QName(node)
        namespace = _RENAME.get(q.namespace or "", q.namespace)
        local = (rename or {}).get(q.localname, q.localname)
        node.tag = f"{{{namespace}}}{local}" if namespace else local
    return clone


def _append_copy(parent: etree._Element, el: etree._Element, prefix: str, name: str) -> None:
    """Copy ``el``'s children under a new element ``prefix:name``."""
    target = _sub(parent, prefix, name)
    target.text = el.text
    for child in el:
        if isinstance(child.tag, str):
            target.append(_copy(child))


def _refuse(what: str) -> ConversionUnavailable:
    return ConversionUnavailable(f"eCH-0020 2.x to 3.0: no mapping for {what}")


class _Converter:
    def __init__(self, local_id_category: str | None) -> None:
        self.local_id_category = local_id_category

    # -- person identification (eCH-0044/1 -> eCH-0044/4) -------------------------------

    def person_identification(self, parent: etree._Element, name: str, pid: etree._Element,
                              prefix: str = "e20", original_name: str | None = None) -> None:
        out = _sub(parent, prefix, name)
        vn = _text(pid, "e44:vn")
        if vn:
            _sub(out, "e44", "vn", vn)
        category = _text(pid, "e44:localPersonId/e44:personIdCategory")
        person_id = _text(pid, "e44:localPersonId/e44:personId")
        if not category or not person_id:
            # eCH-0044/1 tolerated an empty localPersonId; eCH-0044/4 does not. Filling it
            # is a decision of the node's operator (configuration), never a silent default.
            if self.local_id_category is None or not vn:
                raise ConversionUnavailable(
                    "eCH-0020 2.x to 3.0: empty localPersonId is not allowed in eCH-0044/4 "
                    "and no fallback category is configured"
                )
            category, person_id = self.local_id_category, vn
        local = _sub(out, "e44", "localPersonId")
        _sub(local, "e44", "personIdCategory", category)
        _sub(local, "e44", "personId", person_id)
        for other in pid.findall("e44:OtherPersonId", V2):
            _append_copy(out, other, "e44", "otherPersonId")
        for eu in pid.findall("e44:EuPersonId", V2):
            _append_copy(out, eu, "e44", "euPersonId")
        _sub(out, "e44", "officialName", _text(pid, "e44:officialName"))
        _sub(out, "e44", "firstName", _text(pid, "e44:firstName"))
        if original_name:
            _sub(out, "e44", "originalName", original_name)
        _sub(out, "e44", "sex", _text(pid, "e44:sex"))
        _append_copy(out, _find(pid, "e44:dateOfBirth"), "e44", "dateOfBirth")

    # -- full person (eCH-0011/4 personType + anyPerson -> flat 3.0 person) --------------

    def person(self, parent: etree._Element, name: str, *, pid: etree._Element,
               names: etree._Element, place_of_birth: etree._Element, marital: etree._Element,
               nationality: etree._Element, religion: str | None, language: str | None,
               contact: etree._Element | None, date_of_death: str | None,
               any_person: etree._Element, addons: list[etree._Element],
               data_lock: str | None, paper_lock: str | None, names_ns: str = "e11") -> None:
        out = _sub(parent, "e20", name)
        self.person_identification(out, "personIdentification", pid)
        self.name_info(out, pid, {new: _text(names, f"{names_ns}:{old}") for old, new in _OPTIONAL_NAMES})
        self._no_name_on_passport(any_person)
        self.birth_info(out, pid, place_of_birth)
        self.religion_data(out, religion)
        marital_out = _sub(_sub(out, "e20", "maritalInfo"), "e20", "maritalData")
        _sub(marital_out, "e11", "maritalStatus", _text(marital, "e11:maritalStatus"))
        if _text(marital, "e11:dateOfMaritalStatus"):
            _sub(marital_out, "e11", "dateOfMaritalStatus", _text(marital, "e11:dateOfMaritalStatus"))
        if _text(marital, "e11:cancelationReason"):
            _sub(marital_out, "e11", "cancelationReason", _text(marital, "e11:cancelationReason"))
        if _find(marital, "e11:separation") is not None:
            separation = _sub(marital_out, "e11", "separationData")
            _sub(separation, "e11", "separation", _text(marital, "e11:separation"))
            if _text(marital, "e11:dateOfSeparation"):
                _sub(separation, "e11", "separationValidFrom", _text(marital, "e11:dateOfSeparation"))
        self.nationality_data(out, nationality)
        if date_of_death:
            period = _sub(_sub(out, "e20", "deathData"), "e11", "deathPeriod")
            _sub(period, "e11", "dateFrom", date_of_death)
        if contact is not None:
            self.contact_data(out, "contactData", contact)
        self.additional_data(out, language)
        self.origin_or_permit(out, any_person, addons)
        self.lock_data(out, data_lock, paper_lock)

    # The parts of a 3.0 person, shared by the full person above and the birth person.

    @staticmethod
    def name_info(out: etree._Element, pid: etree._Element, optional: dict[str, str | None]) -> etree._Element:
        """nameInfo/nameData: the official and first name come from the identification."""
        name_data = _sub(_sub(out, "e20", "nameInfo"), "e20", "nameData")
        _sub(name_data, "e11", "officialName", _text(pid, "e44:officialName"))
        _sub(name_data, "e11", "firstName", _text(pid, "e44:firstName"))
        for _old, new in _OPTIONAL_NAMES:
            if optional.get(new):
                _sub(name_data, "e11", new, optional[new])
        return name_data

    @staticmethod
    def _no_name_on_passport(any_person: etree._Element | None) -> None:
        if _find(any_person, "e11:foreigner/e11:nameOnPassport") is not None:
            raise _refuse("foreigner/nameOnPassport (3.0 needs a structured foreign name)")

    def birth_info(self, out: etree._Element, pid: etree._Element, place: etree._Element, place_ns: str = "e11") -> None:
        birth = _sub(_sub(out, "e20", "birthInfo"), "e20", "birthData")
        _append_copy(birth, _find(pid, "e44:dateOfBirth"), "e11", "dateOfBirth")
        self.place_of_birth(birth, place, place_ns)
        _sub(birth, "e11", "sex", _text(pid, "e44:sex"))

    @staticmethod
    def religion_data(out: etree._Element, religion: str | None) -> None:
        if religion is None:
            raise _refuse("a person without religion (required in 3.0)")
        _sub(_sub(out, "e20", "religionData"), "e11", "religion", religion)

    @staticmethod
    def nationality_data(out: etree._Element, nationality: etree._Element) -> None:
        nat = _sub(out, "e20", "nationalityData")
        _sub(nat, "e11", "nationalityStatus", _text(nationality, "e11:nationalityStatus"))
        country = _find(nationality, "e11:country")
        if country is not None:
            _append_copy(_sub(nat, "e11", "countryInfo"), country, "e11", "country")

    @staticmethod
    def additional_data(out: etree._Element, language: str | None) -> None:
        if language:
            _sub(_sub(out, "e20", "personAdditionalData"), "e21", "languageOfCorrespondance", language)

    def origin_or_permit(self, out: etree._Element, any_person: etree._Element, addons: list[etree._Element]) -> None:
        """anyPerson/swiss -> placeOfOriginInfo (one per origin); anyPerson/foreigner -> residencePermitData."""
        swiss = _find(any_person, "e11:swiss")
        foreigner = _find(any_person, "e11:foreigner")
        if swiss is not None:
            origins = swiss.findall("e11:placeOfOrigin", V2)
            if not origins:
                raise _refuse("a Swiss person without placeOfOrigin")
            for origin in origins:
                info = _sub(out, "e20", "placeOfOriginInfo")
                _append_copy(info, origin, "e20", "placeOfOrigin")
                addon = self._addon_for(origin, addons)
                if addon is not None and (_text(addon, "e21:naturalizationDate") or _text(addon, "e21:expatriationDate")):
                    data = _sub(info, "e20", "placeOfOriginAddonData")
                    for field in ("naturalizationDate", "expatriationDate"):
                        if _text(addon, f"e21:{field}"):
                            _sub(data, "e21", field, _text(addon, f"e21:{field}"))
        elif foreigner is not None:
            permit = _sub(out, "e20", "residencePermitData")
            _sub(permit, "e11", "residencePermit", _text(foreigner, "e11:residencePermit"))
            if _text(foreigner, "e11:residencePermitTill"):
                _sub(permit, "e11", "residencePermitValidTill", _text(foreigner, "e11:residencePermitTill"))
        else:
            raise _refuse("anyPerson without swiss or foreigner")

    @staticmethod
    def lock_data(out: etree._Element, data_lock: str | None, paper_lock: str | None) -> None:
        lock = _sub(out, "e20", "lockData")
        # 2.x made the locks optional and absence meant "no lock" (code 0); 3.0 requires them.
        _sub(lock, "e21", "dataLock", data_lock or "0")
        _sub(lock, "e21", "paperLock", paper_lock or "0")

    @staticmethod
    def place_of_birth(parent: etree._Element, place: etree._Element, ns: str = "e11") -> None:
        """2.x birthplaceType (eCH-0011) or birthBirthPlaceType (eCH-0020, ``ns="e20"``) -> 3.0 generalPlaceType.

        2.x wrapped a Swiss municipality with a fixed country ``CH`` and called the foreign
        town ``foreignBirthTown``; 3.0 has the municipality directly and calls it ``town``.
        The birth event's own type has the same shape in the eCH-0020 namespace, without
        ``unknown``.
        """
        out = _sub(parent, "e11", "placeOfBirth")
        swiss = _find(place, f"{ns}:swissTown")
        foreign = _find(place, f"{ns}:foreignCountry")
        if _find(place, f"{ns}:unknown") is not None:
            _sub(out, "e11", "unknown", _text(place, f"{ns}:unknown"))
        elif swiss is not None:
            _append_copy(out, _find(swiss, f"{ns}:municipality"), "e11", "swissTown")
        elif foreign is not None:
            target = _sub(out, "e11", "foreignCountry")
            _append_copy(target, _find(foreign, f"{ns}:country"), "e11", "country")
            if _text(foreign, f"{ns}:foreignBirthTown"):
                _sub(target, "e11", "town", _text(foreign, f"{ns}:foreignBirthTown"))
        else:
            raise _refuse("placeOfBirth")

    @staticmethod
    def _addon_for(origin: etree._Element, addons: list[etree._Element]) -> etree._Element | None:
        key = (_text(origin, "e11:originName"), _text(origin, "e11:canton"))
        for addon in addons:
            if (_text(addon, "e21:origin/e11:originName"), _text(addon, "e21:origin/e11:canton")) == key:
                return addon
        return None

    def contact_data(self, parent: etree._Element, name: str, contact: etree._Element) -> None:
        out = _sub(parent, "e20", name)
        for child in contact:
            if not isinstance(child.tag, str):
                continue
            local = etree.QName(child).localname
            if local == "personIdentification":
                self.person_identification(out, "personIdentification", child, prefix="e11")
            elif local == "partnerIdOrgnisation":  # the 2.x typo is fixed in 3.0
                _append_copy(out, child, "e11", "partnerIdOrganisation")
            elif local == "contactAddress":
                _append_copy(out, child, "e11", "contactAddress")
            else:
                raise _refuse(f"contact/{local}")

    # -- addresses and residences --------------------------------------------------------

    def dwelling_address(self, parent: etree._Element, prefix: str, dwelling: etree._Element) -> None:
        out = _sub(parent, prefix, "dwellingAddress")
        for field in ("EGID", "EWID", "householdID"):
            value = self._local_text(dwelling, field)
            if value:
                _sub(out, "e11", field, value)
        without = dwelling.find("{*}withoutEGID")
        if without is not None and self._local_text(without, "householdID"):
            _sub(out, "e11", "householdID", self._local_text(without, "householdID"))
        _append_copy(out, dwelling.find("{*}address"), "e11", "address")
        _sub(out, "e11", "typeOfHousehold", self._local_text(dwelling, "typeOfHousehold"))
        if self._local_text(dwelling, "movingDate"):
            _sub(out, "e11", "movingDate", self._local_text(dwelling, "movingDate"))

    @staticmethod
    def _local_text(el: etree._Element, local: str) -> str | None:
        found = el.find(f"{{*}}{local}")
        return None if found is None or found.text is None else found.text.strip()

    def reporting(self, out: etree._Element, source: etree._Element) -> None:
        """Copy reportingMunicipality/federalRegister, dates, comesFrom/goesTo, dwelling."""
        for child in source:
            if not isinstance(child.tag, str):
                continue
            local = etree.QName(child).localname
            if local in ("reportingMunicipality", "comesFrom", "goesTo"):
                _append_copy(out, child, "e20", local)
            elif local in ("federalRegister", "arrivalDate", "departureDate"):
                _sub(out, "e20", local, (child.text or "").strip())
            elif local == "dwellingAddress":
                self.dwelling_address(out, "e20", child)
            else:
                raise _refuse(f"residence/{local}")

    def residence(self, parent: etree._Element, holder: etree._Element) -> None:
        """v2 hasMainResidence/hasSecondaryResidence/hasOtherResidence -> v3."""
        main = _find(holder, "e20:hasMainResidence")
        secondary = _find(holder, "e20:hasSecondaryResidence")
        other = _find(holder, "e20:hasOtherResidence")
        if main is not None:
            out = _sub(parent, "e20", "hasMainResidence")
            inner = main.find("{*}mainResidence")
            self.reporting(out, inner)
            for sec in main.findall("{*}secondaryResidence"):
                _append_copy(out, sec, "e20", "secondaryResidence")
        elif secondary is not None:
            out = _sub(parent, "e20", "hasSecondaryResidence")
            self.reporting(out, secondary.find("{*}secondaryResidence"))
            _append_copy(out, secondary.find("{*}mainResidence"), "e20", "mainResidence")
        elif other is not None:
            out = _sub(parent, "e20", "hasOtherResidence")
            self.reporting(out, other.find("{*}secondaryResidenceInformation"))
        else:
            raise _refuse("an event without residence")

    # -- events --------------------------------------------------------------------------

    def base_delivery(self, parent: etree._Element, event: etree._Element) -> None:
        out = _sub(parent, "e20", "baseDelivery")
        for message in event.findall("e20:messages", V2):
            for unsupported in ("nameOfFather", "nameOfMother", "Relationship", "occupation", "householdNumber", "extension"):
                if _find(message, f"e20:{unsupported}") is not None:
                    raise _refuse(f"baseDelivery/{unsupported}")
            msg = _sub(out, "e20", "messages")
            bdp = _find(message, "e20:baseDeliveryPerson")
            person = _find(bdp, "e20:person")
            core = _find(person, "e11:coredata")
            self.person(
                msg, "baseDeliveryPerson",
                pid=_find(person, "e11:personIdentification"),
                names=core, place_of_birth=_find(core, "e11:placeOfBirth"),
                marital=_find(core, "e11:maritalData"), nationality=_find(core, "e11:nationality"),
                religion=_text(core, "e11:religion"), language=_text(core, "e11:languageOfCorrespondance"),
                contact=_find(core, "e11:contact"), date_of_death=_text(core, "e11:dateOfDeath"),
                any_person=_find(bdp, "e20:anyPerson"), addons=bdp.findall("e20:placeOfOriginAddon", V2),
                data_lock=_text(message, "e20:dataLock"), paper_lock=_text(message, "e20:paperLock"),
            )
            self.residence(msg, message)

    def move_in(self, parent: etree._Element, event: etree._Element) -> None:
        for unsupported in ("nameOfFather", "nameOfMother", "Relationship", "occupation", "extension"):
            if _find(event, f"e20:{unsupported}") is not None:
                raise _refuse(f"moveIn/{unsupported}")
        out = _sub(parent, "e20", "moveIn")
        person = _find(event, "e20:moveInPerson")
        self.person(
            out, "moveInPerson",
            pid=_find(person, "e20:personIdentification"), names=person,
            place_of_birth=_find(person, "e20:placeOfBirth"), marital=_find(person, "e20:maritalData"),
            nationality=_find(person, "e20:nationality"), religion=_text(person, "e20:religion"),
            language=_text(person, "e20:languageOfCorrespondance"), contact=_find(person, "e20:contact"),
            date_of_death=None, any_person=_find(person, "e20:anyPerson"),
            addons=person.findall("e20:placeOfOriginAddon", V2), data_lock=None, paper_lock=None,
            # The v2 moveIn person's name fields live in the eCH-0020/2 namespace, not eCH-0011.
            names_ns="e20",
        )
        self.residence(out, event)

    def move(self, parent: etree._Element, event: etree._Element) -> None:
        self._no_extension(event, "move")
        out = _sub(parent, "e20", "move")
        self.person_identification(out, "movePerson", _find(event, "e20:movePerson/e20:personIdentification"))
        reporting = _sub(out, "e20", "moveReportingMunicipality")
        self.reporting(reporting, _find(event, "e20:moveReportingAddress"))

    def move_out(self, parent: etree._Element, event: etree._Element) -> None:
        self._no_extension(event, "moveOut")
        out = _sub(parent, "e20", "moveOut")
        self.person_identification(out, "moveOutPerson", _find(event, "e20:moveOutPerson/e20:personIdentification"))
        destination = _find(event, "e20:moveOutReportingDestination")
        reporting = _sub(out, "e20", "moveOutReportingDestination")
        # 2.x orders goesTo before departureDate; 3.0 the other way round.
        municipality = destination.find("{*}reportingMunicipality")
        if municipality is not None:
            _append_copy(reporting, municipality, "e20", "reportingMunicipality")
        else:
            _sub(reporting, "e20", "federalRegister", self._local_text(destination, "federalRegister"))
        _sub(reporting, "e20", "departureDate", self._local_text(destination, "departureDate"))
        _append_copy(reporting, destination.find("{*}goesTo"), "e20", "goesTo")

    def contact(self, parent: etree._Element, event: etree._Element) -> None:
        self._no_extension(event, "contact")
        if _find(event, "e20:contactValidTill") is not None:
            raise _refuse("contact/contactValidTill (dateTime in 2.x, date inside contactData in 3.0)")
        out = _sub(parent, "e20", "contact")
        self.person_identification(out, "contactPerson", _find(event, "e20:contactAddressPerson/e20:personIdentification"))
        self.contact_data(out, "contactData", _find(event, "e20:contact"))

    def death(self, parent: etree._Element, event: etree._Element) -> None:
        self._no_extension(event, "death")
        out = _sub(parent, "e20", "death")
        self.person_identification(out, "deathPerson", _find(event, "e20:deathPerson/e20:personIdentification"))
        period = _sub(_sub(out, "e20", "deathData"), "e11", "deathPeriod")
        _sub(period, "e11", "dateFrom", _text(event, "e20:dateOfDeath"))

    def birth(self, parent: etree._Element, event: etree._Element) -> None:
        """2.3 eventBirth -> 3.0 eventBirth.

        The child's 2.x ``birthPersonType`` (identification, callName, placeOfBirth,
        nationality, religion, language, anyPerson) becomes the 3.0 ``birthPersonType``.
        3.0 additionally requires ``maritalData`` and ``lockData``: a newborn is single
        (eCH-0011 maritalStatus 1), which is why 2.x did not carry it, and absent 2.x locks
        mean "no lock" (code 0) as everywhere in this mapping. The 3.0 residence of the
        child is optional and 2.x has none, so none is written.
        """
        self._no_extension(event, "birth")
        for parent_part in ("mother", "father"):
            if _find(event, f"e20:{parent_part}") is not None:
                # 3.0 carries parents as eCH-0021/7 parentalRelationship, whose "care"
                # (parental custody) is required; a 2.x birth does not say who has custody,
                # and the converter does not invent it.
                raise _refuse(f"birth/{parent_part} (3.0 parentalRelationship requires the parental "
                              "custody (care), which a 2.x birth does not carry)")
        person = _find(event, "e20:birthPerson")
        pid = _find(person, "e20:personIdentification")
        any_person = _find(person, "e20:anyPerson")
        self._no_name_on_passport(any_person)
        out = _sub(_sub(parent, "e20", "birth"), "e20", "birthPerson")
        self.person_identification(out, "personIdentification", pid)
        self.name_info(out, pid, {"callName": _text(person, "e20:callName")})
        self.birth_info(out, pid, _find(person, "e20:placeOfBirth"), place_ns="e20")
        self.religion_data(out, _text(person, "e20:religion"))
        _sub(_sub(out, "e20", "maritalData"), "e11", "maritalStatus", _SINGLE)
        self.nationality_data(out, _find(person, "e20:nationality"))
        self.additional_data(out, _text(person, "e20:languageOfCorrespondance"))
        self.origin_or_permit(out, any_person, [])
        self.lock_data(out, None, None)

    def change_name(self, parent: etree._Element, event: etree._Element) -> None:
        self._no_extension(event, "changeName")
        person = _find(event, "e20:changeNamePerson")
        pid = _find(person, "e20:personIdentification")
        if _find(person, "e20:nameOnPassport") is not None:
            raise _refuse("changeName/nameOnPassport (3.0 needs a structured foreign name)")
        out = _sub(parent, "e20", "changeName")
        self.person_identification(out, "changeNamePerson", pid)
        name_data = _sub(_sub(out, "e20", "nameInfo"), "e20", "nameData")
        # 3.0 sends the complete new name: fields not changed come from the identification.
        _sub(name_data, "e11", "officialName", _text(person, "e20:officialName") or _text(pid, "e44:officialName"))
        _sub(name_data, "e11", "firstName", _text(person, "e20:firstName") or _text(pid, "e44:firstName"))
        for old, new in _OPTIONAL_NAMES:
            if _text(person, f"e20:{old}"):
                _sub(name_data, "e11", new, _text(person, f"e20:{old}"))

    @staticmethod
    def _no_extension(event: etree._Element, name: str) -> None:
        if _find(event, "e20:extension") is not None:
            raise _refuse(f"{name}/extension (free content cannot be mapped)")

    # -- header and document -------------------------------------------------------------

    def header(self, parent: etree._Element, header: etree._Element) -> None:
        out = _sub(parent, "e20", "deliveryHeader")
        order = ("senderId", "originalSenderID", "declarationLocalReference", "recipientId", "messageId",
                 "referenceMessageId", "ourBusinessReferenceID", "yourBusinessReferenceId", "messageType",
                 "subMessageType", "sendingApplication", "partialDelivery", "subject", "object", "comment",
                 "messageDate", "initialMessageDate", "eventDate", "modificationDate", "action",
                 "attachment", "testDeliveryFlag", "testData", "extension")
        renamed = {"originalSenderID": "originalSenderId", "ourBusinessReferenceID": "ourBusinessReferenceId"}
        data_lock = None
        for child in header:
            if not isinstance(child.tag, str):
                continue
            local = etree.QName(child).localname
            if local not in order:
                raise _refuse(f"deliveryHeader/{local}")
            if local in ("partialDelivery", "object", "attachment", "testData"):
                raise _refuse(f"deliveryHeader/{local}")
            if local == "extension":
                for ext in child:
                    if isinstance(ext.tag, str) and etree.QName(ext).localname == "dataLock":
                        data_lock = (ext.text or "").strip()
                    elif isinstance(ext.tag, str):
                        raise _refuse(f"deliveryHeader/extension/{etree.QName(ext).localname}")
                continue
            if local == "eventDate":
                # eCH-0058/5 eventDate is an xs:date; 2.x sent an xs:dateTime.
                _sub(out, "e58", "eventDate", (child.text or "").strip()[:10])
                continue
            if local == "sendingApplication":
                _append_copy(out, child, "e58", "sendingApplication")
                continue
            _sub(out, "e58", renamed.get(local, local), (child.text or "").strip())
        if data_lock:
            _sub(out, "e20", "dataLock", data_lock)


_EVENTS: dict[str, Callable[[_Converter, etree._Element, etree._Element], None]] = {
    "baseDelivery": _Converter.base_delivery,
    "moveIn": _Converter.move_in,
    "move": _Converter.move,
    "moveOut": _Converter.move_out,
    "contact": _Converter.contact,
    "death": _Converter.death,
    "changeName": _Converter.change_name,
    "birth": _Converter.birth,
}


def convert_v2_to_v3(tree: etree._ElementTree, *, local_id_category: str | None = None) -> etree._ElementTree:
    """Convert an eCH-0020 2.x delivery to 3.0; raise :class:`ConversionUnavailable`.

    ``local_id_category``: when set, an empty eCH-0044/1 ``localPersonId`` (allowed in 2.x,
    forbidden in 3.0) becomes ``(local_id_category, vn)``; when None such a person is refused.
    The result is not validated here; the caller validates it against eCH-0020-3-0.xsd.
    """
    root = tree.getroot()
    if etree.QName(root).namespace != V2["e20"] or etree.QName(root).localname != "delivery":
        raise ConversionUnavailable("not an eCH-0020 2.x delivery")
    children = [c for c in root if isinstance(c.tag, str)]
    if len(children) != 2 or etree.QName(children[0]).localname != "deliveryHeader":
        raise ConversionUnavailable("eCH-0020 2.x delivery without header and one event")
    event = children[1]
    name = etree.QName(event).localname
    handler = _EVENTS.get(name)
    if handler is None:
        reason = REFUSED_EVENTS.get(name, "the standard defines no mapping that this gateway implements")
        raise ConversionUnavailable(f"eCH-0020 2.x to 3.0: event {name} is not converted: {reason}")
    converter = _Converter(local_id_category)
    out = etree.Element(_q("e20", "delivery"), nsmap={f"eCH-{p[1:].zfill(4)}": ns for p, ns in V3.items()})
    out.set("version", "3.0")
    try:
        converter.header(out, children[0])
        handler(converter, out, event)
        etree.cleanup_namespaces(out, top_nsmap=out.nsmap)
    except (AttributeError, TypeError, ValueError):
        # A required part was missing in the source (it would not have been schema-valid).
        raise ConversionUnavailable(f"eCH-0020 2.x to 3.0: {name} lacks a part the mapping needs") from None
    return etree.ElementTree(out)
