"""Question/answer facts drawn from the Acme Robotics handbook, split by handbook file.

TRAIN facts come only from TRAIN_DOCS and become the adapter's instruction rows (the
house answer style); HELDOUT facts come only from HELDOUT_DOCS and are never trained on.
Each fact is (document stem, question, answer, extra). For TRAIN facts `extra` is the
house-style answer sentence without its citation; for HELDOUT facts it is a list of
aliases. `answer` appears literally in its document. TRAIN facts may also give an
`evidence` string: the passage to put in the correct source when the answer's first
occurrence in the document is not the sentence that states the fact.
"""

from __future__ import annotations

TRAIN_DOCS = (
    "01-welcome",
    "02-travel",
    "03-expenses",
    "05-it-equipment",
    "06-leave",
    "08-product-lines",
    "10-returns",
    "12-onboarding",
    "13-code-review",
    "15-data-retention",
    "17-remote-work",
    "18-performance-reviews",
    "20-hiring",
    "21-procurement",
    "23-communication-tools",
    "24-release-process",
    "26-health-benefits",
    "28-shipping",
    "29-information-security",
)

HELDOUT_DOCS = (
    "04-security-badges",
    "07-on-call",
    "09-warranty",
    "11-lab-safety",
    "14-incident-severity",
    "16-support-slas",
    "19-learning-budget",
    "22-facilities",
    "25-open-source",
    "27-ethics",
    "30-offboarding",
)

# (document, question, answer, house-style sentence[, evidence])
TRAIN: list[tuple[str, ...]] = [
    # 01-welcome
    (
        "01-welcome",
        "Who founded Acme Robotics?",
        "Ines Varga-Lund and Tomasz Edevane",
        "Acme Robotics was founded by Ines Varga-Lund and Tomasz Edevane.",
    ),
    (
        "01-welcome",
        "Who is the CEO of Acme Robotics?",
        "Odile Fairbrook",
        "The chief executive is Odile Fairbrook.",
    ),
    (
        "01-welcome",
        "What is the company intranet called?",
        "Dockyard",
        "The intranet is called Dockyard.",
    ),
    (
        "01-welcome",
        "When is the company all-hands meeting?",
        "first Monday of every month at 16:00 UTC",
        "The all-hands meeting is on the first Monday of every month at 16:00 UTC.",
    ),
    (
        "01-welcome",
        "How many people work at the Brenmoor site?",
        "150 people",
        "Brenmoor hosts 150 people, most of them engineers.",
    ),
    # 02-travel
    (
        "02-travel",
        "Who approves travel abroad?",
        "Regional Director",
        "Travel abroad is approved by the Regional Director via form TR-7.",
    ),
    (
        "02-travel",
        "How far ahead of departure must a trip abroad be approved?",
        "14 days",
        "Travel abroad needs approval at least 14 days before departure.",
    ),
    (
        "02-travel",
        "What is the hotel limit per night in a standard city?",
        "180 EUR",
        "The hotel limit in standard cities is 180 EUR per night.",
    ),
    (
        "02-travel",
        "Which travel agency do we book trips with?",
        "Bluecompass Travel",
        "Trips are booked through Bluecompass Travel.",
    ),
    (
        "02-travel",
        "When am I allowed to book premium economy?",
        "6 hours or longer",
        "Premium economy is allowed for flights of 6 hours or longer.",
    ),
    (
        "02-travel",
        "What is the policy number of the company travel insurance?",
        "AX-55120",
        "The travel insurance policy number is AX-55120.",
    ),
    # 03-expenses
    (
        "03-expenses",
        "How long do I have to file an expense claim?",
        "30 days",
        "Expense claims must be filed in Ledgerline within 30 days of the expense.",
    ),
    (
        "03-expenses",
        "Above what amount do I need a receipt?",
        "25 EUR",
        "Receipts are required for every expense above 25 EUR.",
    ),
    (
        "03-expenses",
        "Which form do I use when I lost a receipt?",
        "EX-3",
        "A lost receipt is declared with form EX-3.",
    ),
    (
        "03-expenses",
        "Who approves expense claims above 2,000 EUR?",
        "Helga Marsden",
        "Claims above 2,000 EUR also need approval from Finance Controller Helga Marsden.",
    ),
    (
        "03-expenses",
        "What is the daily meal allowance when travelling abroad?",
        "55 EUR",
        "The meal allowance abroad is 55 EUR per day.",
    ),
    (
        "03-expenses",
        "How much is mileage for my own car reimbursed?",
        "0.32 EUR per kilometre",
        "Your own car is reimbursed at 0.32 EUR per kilometre.",
    ),
    (
        "03-expenses",
        "When are approved expense claims paid?",
        "20th of each month",
        "Approved claims are paid in the reimbursement run on the 20th of each month.",
    ),
    # 05-it-equipment
    (
        "05-it-equipment",
        "Which laptop do firmware engineers get?",
        "Norrland K16 Pro",
        "Firmware engineers receive the Norrland K16 Pro with 64 GB of memory.",
    ),
    (
        "05-it-equipment",
        "How often are laptops replaced?",
        "36 months",
        "Laptops are refreshed every 36 months.",
    ),
    (
        "05-it-equipment",
        "Which form do I use to request extra equipment?",
        "IT-12",
        "Additional equipment is requested with form IT-12 in the Helm portal.",
    ),
    (
        "05-it-equipment",
        "What is the phone extension of the IT Service Desk?",
        "2200",
        "The IT Service Desk is on internal extension 2200.",
    ),
    (
        "05-it-equipment",
        "What is our mobile device management service called?",
        "Keystone",
        "Personal devices must be enrolled in Keystone, the mobile device management service.",
    ),
    # 06-leave
    (
        "06-leave",
        "How many days of annual leave does a full-time employee get?",
        "27 days",
        "Full-time employees receive 27 days of paid annual leave.",
    ),
    (
        "06-leave",
        "How many unused leave days can I carry over?",
        "5 unused days",
        "You may carry over at most 5 unused days, to be used by 31 March.",
    ),
    (
        "06-leave",
        "From which day of sickness do I need a doctor's note?",
        "4th consecutive day",
        "A doctor's note is needed from the 4th consecutive day of sickness.",
    ),
    (
        "06-leave",
        "How long is parental leave for the primary carer?",
        "20 weeks",
        "The primary carer receives 20 weeks of fully paid parental leave.",
    ),
    (
        "06-leave",
        "How many volunteering days do we get per year?",
        "2 volunteering days",
        "Everyone receives 2 volunteering days per year.",
    ),
    (
        "06-leave",
        "Where do I request leave?",
        "Tempo",
        "Leave is requested in Tempo, the HR system.",
    ),
    # 08-product-lines
    (
        "08-product-lines",
        "What payload can a Quill arm lift?",
        "7 kg",
        "A Quill arm lifts a payload of up to 7 kg.",
    ),
    (
        "08-product-lines",
        "What is the top speed of a Tern robot?",
        "1.8 metres per second",
        "A Tern robot drives at a top speed of 1.8 metres per second.",
    ),
    (
        "08-product-lines",
        "Who is the product manager for Kestrel?",
        "Mei Lindqvist-Oduya",
        "The Kestrel product manager is Mei Lindqvist-Oduya.",
    ),
    (
        "08-product-lines",
        "Where are Servo-X actuators built?",
        "Brenmoor",
        "Servo-X units are built on our production line in Brenmoor.",
    ),
    (
        "08-product-lines",
        "How long does a Tern robot run on a full battery?",
        "10 hours",
        "A Tern robot runs for 10 hours on a full battery.",
    ),
    (
        "08-product-lines",
        "Which app is used to program Quill arms?",
        "Inkwell",
        "Quill arms are programmed through the Inkwell tablet app.",
    ),
    # 10-returns
    (
        "10-returns",
        "What is the refund window for Servo-X?",
        "45 days",
        "The refund window for the Servo-X line is 45 days.",
    ),
    (
        "10-returns",
        "What is the refund window for Tern robots?",
        "21 days",
        "The refund window for Tern robots is 21 days.",
    ),
    (
        "10-returns",
        "Which form does a customer use to start a return?",
        "RMA-5",
        "Returns start with form RMA-5 in the Harbour support portal.",
    ),
    (
        "10-returns",
        "How long is an RMA number valid?",
        "10 days",
        "An RMA number is valid for 10 days.",
    ),
    (
        "10-returns",
        "What restocking fee applies to opened Quill arms?",
        "12%",
        "Opened Quill units returned in working order carry a 12% restocking fee.",
    ),
    (
        "10-returns",
        "Where are returned products shipped?",
        "Lisvale Returns Centre",
        "All returns are shipped to the Lisvale Returns Centre.",
        "All returns are shipped to the Lisvale Returns Centre.",
    ),
    # 12-onboarding
    (
        "12-onboarding",
        "What time does my first day start?",
        "09:30",
        "Your first day starts at 09:30 at the reception of your site.",
    ),
    (
        "12-onboarding",
        "How long does the Launchpad programme last?",
        "6 weeks",
        "The Launchpad onboarding programme lasts 6 weeks.",
    ),
    (
        "12-onboarding",
        "When must I complete the SEC-100 course?",
        "first 5 working days",
        "SEC-100 must be completed within your first 5 working days.",
    ),
    (
        "12-onboarding",
        "How long is the probation period?",
        "3 months",
        "The probation period is 3 months.",
    ),
    (
        "12-onboarding",
        "When is the meet-the-founders lunch?",
        "second Thursday",
        "The meet-the-founders lunch is on the second Thursday of your first month.",
    ),
    # 13-code-review
    (
        "13-code-review",
        "How many approvals does a code change need?",
        "2 approvals",
        "Every change needs 2 approvals before it can be merged.",
    ),
    (
        "13-code-review",
        "How quickly must a reviewer respond to a review request?",
        "1 business day",
        "Reviewers respond to a review request within 1 business day.",
    ),
    (
        "13-code-review",
        "When should a pull request be split?",
        "400 lines",
        "A pull request that changes more than 400 lines should be split.",
    ),
    (
        "13-code-review",
        "Which prefix must commit messages start with?",
        "ACME-",
        "Commit messages start with the ticket number using the prefix ACME-.",
    ),
    (
        "13-code-review",
        "Who must approve changes that touch authentication?",
        "Bastion",
        "Authentication changes need an approval from Bastion, the application security team.",
    ),
    (
        "13-code-review",
        "Which merge strategy do we use?",
        "squash",
        "Changes are merged with the squash strategy.",
    ),
    # 15-data-retention
    (
        "15-data-retention",
        "How long is robot telemetry kept?",
        "18 months",
        "Robot telemetry is retained for 18 months.",
    ),
    (
        "15-data-retention",
        "How long are application logs retained?",
        "90 days",
        "Application logs are retained for 90 days.",
    ),
    (
        "15-data-retention",
        "How long are financial records kept?",
        "7 years",
        "Financial records are retained for 7 years.",
    ),
    (
        "15-data-retention",
        "Who is the Data Protection Officer?",
        "Lucía Fernhill",
        "The Data Protection Officer is Lucía Fernhill.",
    ),
    (
        "15-data-retention",
        "How quickly are deletion requests processed?",
        "30 days",
        "Deletion requests are processed within 30 days of receipt.",
        "Deletion requests are processed within 30 days of receipt.",
    ),
    (
        "15-data-retention",
        "How long are backups retained?",
        "35 days",
        "Backups are retained for 35 days.",
    ),
    # 17-remote-work
    (
        "17-remote-work",
        "How many days a week must I be in the office?",
        "2 days",
        "Employees spend at least 2 days a week in the office.",
    ),
    (
        "17-remote-work",
        "Which days are the office anchor days?",
        "Tuesday and Thursday",
        "Tuesday and Thursday are the anchor days.",
    ),
    (
        "17-remote-work",
        "How many days a year may I work from abroad?",
        "20 working days",
        "You may work from abroad for up to 20 working days per year.",
    ),
    (
        "17-remote-work",
        "How large is the home office stipend?",
        "400 EUR",
        "The one-time home office stipend is 400 EUR.",
    ),
    (
        "17-remote-work",
        "What is the company VPN called?",
        "Tollgate",
        "The company VPN is called Tollgate.",
    ),
    (
        "17-remote-work",
        "What are the core hours?",
        "10:00 to 15:00",
        "Core hours are 10:00 to 15:00 local time.",
    ),
    # 18-performance-reviews
    (
        "18-performance-reviews",
        "When do formal performance reviews take place?",
        "April and in October",
        "Formal reviews take place twice a year, in April and in October.",
    ),
    (
        "18-performance-reviews",
        "When do promotions take effect?",
        "1 January and 1 July",
        "Promotions take effect on 1 January and 1 July.",
    ),
    (
        "18-performance-reviews",
        "When is the self-assessment due?",
        "2 weeks before",
        "The self-assessment is due 2 weeks before the review conversation.",
    ),
    (
        "18-performance-reviews",
        "How many peers give me feedback in a review?",
        "between 3 and 5 peers",
        "You choose between 3 and 5 peers to give feedback.",
    ),
    (
        "18-performance-reviews",
        "How long does a formal improvement plan last?",
        "8 weeks",
        "A formal improvement plan lasts 8 weeks.",
    ),
    # 20-hiring
    (
        "20-hiring",
        "How much is the referral bonus?",
        "2,500 EUR",
        "The referral bonus is 2,500 EUR, paid after the hire passes probation.",
    ),
    (
        "20-hiring",
        "How many stages does our interview loop have?",
        "4 stages",
        "The interview loop has 4 stages.",
    ),
    (
        "20-hiring",
        "What is our applicant tracking system called?",
        "Scout",
        "Our applicant tracking system is Scout.",
    ),
    (
        "20-hiring",
        "Which training must interviewers complete?",
        "IV-2",
        "Interviewers must complete the Fair Hiring training, course IV-2.",
    ),
    (
        "20-hiring",
        "How soon after the final interview is a hiring decision made?",
        "5 business days",
        "The hiring decision comes within 5 business days of the final interview.",
    ),
    (
        "20-hiring",
        "When do summer internship applications close?",
        "15 February",
        "Summer internship applications close on 15 February.",
    ),
    # 21-procurement
    (
        "21-procurement",
        "Above what amount do I need three quotes?",
        "5,000 EUR",
        "Purchases above 5,000 EUR need three written quotes.",
    ),
    (
        "21-procurement",
        "Who approves purchases above 25,000 EUR?",
        "Marek Ostrander",
        "Purchases above 25,000 EUR need approval from CFO Marek Ostrander.",
    ),
    (
        "21-procurement",
        "Who maintains the preferred supplier list?",
        "Sunniva Hartwell",
        "The preferred supplier list is maintained by procurement lead Sunniva Hartwell.",
    ),
    (
        "21-procurement",
        "What are our standard payment terms?",
        "60 days net",
        "Standard payment terms are 60 days net from the invoice date.",
    ),
    (
        "21-procurement",
        "What is the monthly limit on a corporate card?",
        "3,000 EUR",
        "The monthly corporate card limit is 3,000 EUR.",
    ),
    # 23-communication-tools
    (
        "23-communication-tools",
        "What is the company chat tool?",
        "Murmur",
        "Murmur is our company chat.",
    ),
    (
        "23-communication-tools",
        "Which tool do we use for video calls?",
        "Lantern",
        "Video calls use Lantern, which is built into Murmur.",
    ),
    (
        "23-communication-tools",
        "How quickly should I reply to a direct message?",
        "4 working hours",
        "Reply to direct messages within 4 working hours during core hours.",
    ),
    (
        "23-communication-tools",
        "Above what size should attachments be shared as links?",
        "20 MB",
        "Attachments larger than 20 MB are shared as links.",
    ),
    (
        "23-communication-tools",
        "Who can post in the #acme-news channel?",
        "People Operations and the leadership team",
        "Only People Operations and the leadership team can post in #acme-news.",
    ),
    # 24-release-process
    (
        "24-release-process",
        "How often is firmware released?",
        "every 6 weeks",
        "Firmware is released every 6 weeks, always on a Wednesday.",
    ),
    (
        "24-release-process",
        "When does code freeze start?",
        "5 days before",
        "Code freeze starts 5 days before the release date.",
    ),
    (
        "24-release-process",
        "Who must sign off a hotfix?",
        "Yusuf Tenbridge",
        "Every hotfix needs a sign-off from Head of Quality Yusuf Tenbridge.",
    ),
    (
        "24-release-process",
        "Which version scheme does firmware use?",
        "YY.N",
        "Firmware versions follow the scheme YY.N.",
    ),
    (
        "24-release-process",
        "What share of the fleet gets a release first?",
        "5%",
        "A release first goes to 5% of the customer fleet for 48 hours.",
    ),
    (
        "24-release-process",
        "How fast can a robot roll back its firmware?",
        "under 5 minutes",
        "Every robot can roll back to the previous firmware in under 5 minutes.",
    ),
    # 26-health-benefits
    (
        "26-health-benefits",
        "Who is our health insurer?",
        "Meridian Mutual",
        "Private health insurance is provided by Meridian Mutual.",
    ),
    (
        "26-health-benefits",
        "What share of the health insurance premium does Acme pay?",
        "80%",
        "Acme pays 80% of the premium for employees and their children.",
    ),
    (
        "26-health-benefits",
        "How much dental treatment is covered?",
        "1,000 EUR",
        "Dental treatment is covered up to 1,000 EUR per person per year.",
    ),
    (
        "26-health-benefits",
        "What is the employee assistance programme called?",
        "Lighthouse",
        "The employee assistance programme is called Lighthouse.",
    ),
    (
        "26-health-benefits",
        "How large is the gym subsidy?",
        "30 EUR per month",
        "The gym subsidy is 30 EUR per month.",
    ),
    (
        "26-health-benefits",
        "How much does Acme contribute to the pension plan?",
        "6%",
        "Acme contributes 6% of your salary to the pension plan.",
    ),
    (
        "26-health-benefits",
        "Within how many days must I enrol in health insurance?",
        "31 days",
        "You must enrol within 31 days of your start date.",
    ),
    # 28-shipping
    (
        "28-shipping",
        "What is the cut-off time for same-day shipping?",
        "14:00 UTC",
        "Orders placed before 14:00 UTC on a working day ship the same day.",
    ),
    (
        "28-shipping",
        "Which carrier ships our parcels?",
        "Gullwing Logistics",
        "Parcels are shipped with Gullwing Logistics.",
    ),
    (
        "28-shipping",
        "Above what order value is shipping free?",
        "1,500 EUR",
        "Shipping is free for orders over 1,500 EUR.",
    ),
    (
        "28-shipping",
        "What is the lead time for Tern robots?",
        "3 weeks",
        "Tern robots have a lead time of 3 weeks from order to delivery.",
    ),
    (
        "28-shipping",
        "How much is the Quill crate deposit?",
        "90 EUR",
        "The Quill crate deposit is 90 EUR.",
    ),
    (
        "28-shipping",
        "What do our tracking numbers start with?",
        "GW",
        "Tracking numbers start with the letters GW.",
    ),
    # 29-information-security
    (
        "29-information-security",
        "How long must a password be?",
        "14 characters",
        "Passwords must be at least 14 characters long.",
    ),
    (
        "29-information-security",
        "After how long does a company laptop lock itself?",
        "5 minutes",
        "Company laptops lock automatically after 5 minutes without activity.",
    ),
    (
        "29-information-security",
        "When is the annual security training due?",
        "30 November",
        "The annual SEC-200 training is due by 30 November.",
    ),
    (
        "29-information-security",
        "What are the information classification levels?",
        "Public, Internal, Confidential and Restricted",
        "The levels are Public, Internal, Confidential and Restricted.",
    ),
    (
        "29-information-security",
        "Which extension do I call to report a security incident?",
        "2911",
        "Security incidents are reported to Bastion on internal extension 2911.",
    ),
    (
        "29-information-security",
        "How often are access rights reviewed?",
        "every 6 months",
        "Access rights are reviewed every 6 months by each system owner.",
    ),
]

# (document, question, answer, aliases)
HELDOUT: list[tuple[str, str, str, list[str]]] = [
    ("04-security-badges", "What colour badge do contractors wear?", "grey", ["gray"]),
    ("04-security-badges", "How soon must a lost badge be reported?", "2 hours", []),
    ("04-security-badges", "Which form is used to report a lost badge?", "BD-2", []),
    (
        "04-security-badges",
        "How far in advance must visitors be registered?",
        "24 hours",
        ["1 day", "one day"],
    ),
    (
        "07-on-call",
        "When does the on-call rotation change?",
        "Tuesday at 09:00 UTC",
        ["Tuesdays at 09:00 UTC", "Tuesday, 09:00 UTC", "Tuesday 09:00 UTC"],
    ),
    ("07-on-call", "How quickly must an on-call engineer acknowledge a page?", "10 minutes", []),
    ("07-on-call", "What is the weekly allowance for primary on-call duty?", "300 EUR", []),
    ("07-on-call", "Which tool pages on-call engineers?", "Klaxon", []),
    ("09-warranty", "How long is the warranty on Quill arms?", "36 months", ["3 years"]),
    ("09-warranty", "How long is the Tern battery pack covered?", "12 months", ["1 year"]),
    ("09-warranty", "How much cover does CarePlus add?", "24 months", ["2 years"]),
    ("09-warranty", "Which form is used to open a warranty claim?", "WR-4", []),
    (
        "11-lab-safety",
        "How far from a test cell is the red line painted?",
        "1.5 metres",
        ["1.5 m", "1.5 meters"],
    ),
    ("11-lab-safety", "On which day are the emergency stop buttons tested?", "Monday", ["Mondays"]),
    ("11-lab-safety", "Who is the lab safety officer?", "Bogdan Arkwright", []),
    ("11-lab-safety", "Which course must I complete before entering a lab?", "LS-101", []),
    (
        "14-incident-severity",
        "How often is the status page updated during a SEV1?",
        "30 minutes",
        ["half an hour", "half-hour"],
    ),
    (
        "14-incident-severity",
        "Within how long must a postmortem be published?",
        "5 business days",
        ["5 working days"],
    ),
    (
        "14-incident-severity",
        "Who must be phoned about a SEV1 incident?",
        "Hollis Brandt",
        ["VP of Engineering", "VP Engineering"],
    ),
    ("14-incident-severity", "Which severity level is a cosmetic issue?", "SEV4", ["severity 4"]),
    ("16-support-slas", "What is the first response time for Priority support?", "4 hours", []),
    (
        "16-support-slas",
        "What is the first response time for Critical Care?",
        "30 minutes",
        ["half an hour"],
    ),
    ("16-support-slas", "Who is the support escalation manager?", "Dana Quillfeather", []),
    (
        "16-support-slas",
        "How quickly does a field engineer arrive for Critical Care customers?",
        "48 hours",
        ["2 days"],
    ),
    ("19-learning-budget", "How large is the annual learning budget?", "1,200 EUR", []),
    ("19-learning-budget", "Which form do I use to request learning expenses?", "LD-6", []),
    (
        "19-learning-budget",
        "When is the conference write-up due?",
        "2 weeks",
        ["14 days", "fortnight"],
    ),
    ("19-learning-budget", "What is the internal academy called?", "Foundry", []),
    ("22-facilities", "Which tool is used to book meeting rooms?", "Atrium", []),
    ("22-facilities", "How much does a subsidised lunch cost?", "4.50 EUR", []),
    ("22-facilities", "Who is the facilities manager for Port Halden?", "Orla Demetriou", []),
    (
        "25-open-source",
        "Which form is used to approve contributions to external projects?",
        "OS-1",
        [],
    ),
    ("25-open-source", "Who leads the Open Source Program Office?", "Teodor Vasquez-Lind", []),
    (
        "25-open-source",
        "Which licences are forbidden in robot firmware?",
        "GPL",
        ["GNU General Public License"],
    ),
    ("27-ethics", "Above what value must a gift be declared?", "50 EUR", []),
    ("27-ethics", "What is the anonymous ethics hotline called?", "Clearwater", []),
    ("27-ethics", "Who is the Ethics Officer?", "Ruth Abernathy-Cole", []),
    (
        "30-offboarding",
        "When is access revoked on the last working day?",
        "18:00 UTC",
        ["6 pm UTC", "6pm UTC"],
    ),
    (
        "30-offboarding",
        "Within how long must equipment be returned after the last day?",
        "5 working days",
        [],
    ),
    ("30-offboarding", "On which day of the month are salaries paid?", "25th", []),
]
