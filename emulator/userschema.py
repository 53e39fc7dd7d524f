"""Microsoft Graph's ``user`` (v1.0) as data: every property, its type, and how ``$filter`` treats it.

Two sources, kept in two columns so each can be checked against its page:

- ``page``: the operators the properties table of the user resource page lists
  ("Supports $filter (...)"): https://learn.microsoft.com/graph/api/resources/user#properties
  (microsoftgraph/microsoft-graph-docs-contrib, api-reference/v1.0/resources/user.md).
- ``table``: the advanced-query matrix for user properties, one cell per operator
  (``D`` works by default, ``A`` needs ``ConsistencyLevel: eventual`` and ``$count=true``,
  ``-`` blank): https://learn.microsoft.com/graph/aad-advanced-queries#user-properties
  (includes/filter-directory-objects.md), columns eq ne not ge le in startsWith null.

Where the two disagree the emulator follows the stricter, as the project's rule says: an
operator works only where the matrix has a cell for it ("Blank cells indicate that the query
is not valid for that property"; "Properties that are not listed here do not support $filter
at all"). The page's own rules fill the rest: ``in`` by default wherever ``eq`` is; ``endsWith`` only on mail, otherMails,
userPrincipalName and proxyAddresses, always advanced; ``/$count`` on the collections the page
names, always advanced; and ``any()`` over a collection uses the matrix cell of the operator
inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT, ADVANCED = "default", "advanced"
OPERATORS = ("eq", "ne", "not", "ge", "le", "in", "startswith", "null")

# name | type | page operators | matrix cells (eq ne not ge le in startsWith null)
# Types: s String, b Boolean, d DateTimeOffset, S String collection, c complex, C complex collection.
_TABLE = """
aboutMe                          s |                                       |
accountEnabled                   b | eq ne not in                          | D A A A A D - -
ageGroup                         s | eq ne not in                          | D A A - - D - -
assignedLicenses                 C | eq not $count                         | D - A - - - - -
assignedPlans                    C | eq not                                | D - A - - - - -
authorizationInfo                c |                                       |
birthday                         d |                                       |
businessPhones                   S | eq not ge le startswith               | D - A - - - - -
city                             s | eq ne not ge le in startswith null    | D A A D - D D A
companyName                      s | eq ne not ge le in startswith null    | A A A A A A A A
consentProvidedForMinor          s | eq ne not in                          | D A A - - D - -
country                          s | eq ne not ge le in startswith null    | D A A D D D D A
createdDateTime                  d | eq ne not ge le in                    | D A A D D A - -
creationType                     s | eq ne not in                          | D A A - - D - -
customSecurityAttributes         c |                                       |
deletedDateTime                  d | eq ne not ge le in                    | D A A D D A - -
department                       s | eq ne not ge le in null                | D A A D D D D A
displayName                      s | eq ne not ge le in startswith null    | D A A - - D D A
employeeHireDate                 d | eq ne not ge le in                    | A A - A A A - -
employeeId                       s | eq ne not ge le in startswith null    | D A - - A - D A
employeeLeaveDateTime            d | eq ne not ge le in                    |
employeeOrgData                  c | eq ne not ge le in                    |
employeeType                     s | eq ne not ge le in startswith         | A A - A A A A -
externalUserState                s | eq ne not in                          |
externalUserStateChangeDateTime  d | eq ne not in                          |
faxNumber                        s | eq ne not ge le in startswith null    |
givenName                        s | eq ne not ge le in startswith null    | D A - D D D D A
hireDate                         d |                                       |
id                               s | eq ne not in                          | D A A - - - - -
identities                       C | eq                                    | D - - - - - - -
imAddresses                      S | eq not ge le startswith               | D A A D D - D -
interests                        S |                                       |
isManagementRestricted           b |                                       |
isResourceAccount                b |                                       | D A - - - - - -
jobTitle                         s | eq ne not ge le in startswith null    | D A - D D D - A
lastPasswordChangeDateTime       d |                                       |
legalAgeGroupClassification      s |                                       |
licenseAssignmentStates          C |                                       |
mail                             s | eq ne not ge le in startswith endswith null | D A - D D D D -
mailboxSettings                  c |                                       |
mailNickname                     s | eq ne not ge le in startswith null    | D A - D D D D A
mobilePhone                      s | eq ne not ge le in startswith null    | A A - A A A A A
mySite                           s |                                       |
officeLocation                   s | eq ne not ge le in startswith null    | A A - A A A A A
onPremisesDistinguishedName      s |                                       |
onPremisesDomainName             s |                                       |
onPremisesExtensionAttributes    c | eq ne not in                          | A A - A A A - -
onPremisesImmutableId            s | eq ne not ge le in                    | A A - A A A - -
onPremisesLastSyncDateTime       d | eq ne not ge le in                    | A A - A A A - -
onPremisesProvisioningErrors     C | eq not ge le                          |
onPremisesSamAccountName         s | eq ne not ge le in startswith         | A A - A A A A -
onPremisesSecurityIdentifier     s | eq null                               | D A - - - D - A
onPremisesSyncEnabled            b | eq ne not in null                     | D A - A A D - -
onPremisesUserPrincipalName      s | eq ne not ge le in startswith         | D A - D D D D -
otherMails                       S | eq not ge le in startswith endswith $count | D A - D D D D -
passwordPolicies                 s | ne not null                           | A A - - - - - A
passwordProfile                  c | eq ne not in null                     |
pastProjects                     S |                                       |
postalCode                       s | eq ne not ge le in startswith null    | A A - A A A A A
preferredDataLocation            s |                                       |
preferredLanguage                s | eq ne not ge le in startswith null    | A A - A A A A A
preferredName                    s |                                       |
print                            c |                                       |
provisionedPlans                 C | eq not ge le                          |
proxyAddresses                   S | eq not ge le startswith endswith $count | D A - D D - D A
responsibilities                 S |                                       |
schools                          S |                                       |
securityIdentifier               s | eq not ge le startswith               |
serviceProvisioningErrors        C |                                       |
showInAddressList                b |                                       | A A - A A A - -
signInActivity                   c | eq ne not ge le                       | D A - D D - - -
signInSessionsValidFromDateTime  d |                                       |
skills                           S |                                       |
state                            s | eq ne not ge le in startswith null    | D A - D D D D A
streetAddress                    s | eq ne not ge le in startswith null    | A A - A A A A A
surname                          s | eq ne not ge le in startswith null    | D A - D D D D A
usageLocation                    s | eq ne not ge le in startswith null    | D A - D D D D -
userPrincipalName                s | eq ne not ge le in startswith endswith | D A - - D D D -
userType                         s | eq ne not in null                     | D A A - - D - A
"""

# endsWith works only on these, and only as an advanced query (aad-advanced-queries, "Support for filter").
ENDSWITH = frozenset({"mail", "otherMails", "userPrincipalName", "proxyAddresses"})
# Graph's spelling of each operator in its messages.
SPELLING = {"startswith": "startsWith", "endswith": "endsWith", "null": "null", "$count": "$count"}


@dataclass(frozen=True)
class Property:
    """One user property: its type code, the page's operators, and the operators that work (default or advanced)."""

    name: str
    kind: str
    page: frozenset[str]
    support: dict[str, str]

    @property
    def collection(self) -> bool:
        return self.kind in ("S", "C")


def _parse() -> dict[str, Property]:
    props: dict[str, Property] = {}
    for line in _TABLE.strip().splitlines():
        head, page, cells = (part.strip() for part in line.split("|"))
        name, kind = head.split()
        support: dict[str, str] = {}
        for op, cell in zip(OPERATORS, cells.split(), strict=False):
            if cell != "-":
                support[op] = DEFAULT if cell == "D" else ADVANCED
        ops = frozenset(page.split())
        if support.get("eq") == DEFAULT and "in" in ops:
            support.setdefault("in", DEFAULT)  # "in is supported by default whenever eq is" (same page)
        if name in ENDSWITH:
            support["endswith"] = ADVANCED
        if "$count" in ops:
            support["$count"] = ADVANCED
        props[name] = Property(name, kind, ops, support)
    return props


USER = _parse()
