"""More ways to ask the training facts, questions that need two pages, and questions the
handbook does not answer: the material for grounded (RAFT-style) training rows.

Written from the facts in `facts.TRAIN` only. PARAPHRASES gives two more phrasings of
every training question (as people type them: framed, terse, indirect, lower case);
PAIRS asks two facts from two training pages at once, with a one-sentence answer that
states both; UNANSWERABLE asks about a training page's topic something the handbook
does not say (checked by tests/unit/test_demo_content.py), to be answered with the
decline sentence.
"""

from __future__ import annotations

# training question -> two more phrasings
PARAPHRASES: dict[str, tuple[str, str]] = {
    # 01-welcome
    "Who founded Acme Robotics?": (
        "Remind me, who started the company?",
        "acme robotics founders names",
    ),
    "Who is the CEO of Acme Robotics?": (
        "Quick one: who runs Acme as chief executive?",
        "name of our chief executive",
    ),
    "What is the company intranet called?": (
        "Sanity check: what's the name of our intranet?",
        "intranet name at acme",
    ),
    "When is the company all-hands meeting?": (
        "For my calendar, when does the monthly all-hands happen?",
        "all hands schedule day and time",
    ),
    "How many people work at the Brenmoor site?": (
        "Headcount question: how big is the Brenmoor office?",
        "brenmoor site number of staff",
    ),
    # 02-travel
    "Who approves travel abroad?": (
        "Going on a trip outside the country, whose sign-off do I need?",
        "approval for international business trips",
    ),
    "How far ahead of departure must a trip abroad be approved?": (
        "Planning a trip overseas: how many days before leaving must it be approved?",
        "approval lead time foreign trip",
    ),
    "What is the hotel limit per night in a standard city?": (
        "Booking a hotel in a normal city, what's the nightly cap?",
        "max hotel rate standard city per night",
    ),
    "Which travel agency do we book trips with?": (
        "Through which agency are flights and hotels booked?",
        "our travel booking agency",
    ),
    "When am I allowed to book premium economy?": (
        "Flight question: at what flight length is premium economy ok?",
        "premium economy rule",
    ),
    "What is the policy number of the company travel insurance?": (
        "Need it for a form: what's our travel insurance policy number?",
        "travel insurance policy no.",
    ),
    # 03-expenses
    "How long do I have to file an expense claim?": (
        "Deadline check: within how many days should expenses be claimed?",
        "expense claim filing deadline",
    ),
    "Above what amount do I need a receipt?": (
        "Receipts: from what amount are they required?",
        "receipt threshold for expenses",
    ),
    "Which form do I use when I lost a receipt?": (
        "Lost my receipt, which form declares that?",
        "missing receipt form",
    ),
    "Who approves expense claims above 2,000 EUR?": (
        "Big expense claim over 2,000 EUR: who else has to approve it?",
        "approver for expense claims over 2000 eur",
    ),
    "What is the daily meal allowance when travelling abroad?": (
        "On a trip abroad, how much per day can I spend on meals?",
        "foreign travel meal allowance per day",
    ),
    "How much is mileage for my own car reimbursed?": (
        "Using my private car for work, what's the rate per km?",
        "mileage rate own car",
    ),
    "When are approved expense claims paid?": (
        "Expense reimbursement: on which day of the month does it get paid out?",
        "payout date approved expenses",
    ),
    # 05-it-equipment
    "Which laptop do firmware engineers get?": (
        "Joining as a firmware engineer, what laptop model will I get?",
        "firmware engineer laptop model",
    ),
    "How often are laptops replaced?": (
        "Laptop refresh cycle: how many months?",
        "how long until my laptop gets refreshed",
    ),
    "Which form do I use to request extra equipment?": (
        "Requesting additional equipment, which form do I fill in?",
        "form for extra it equipment",
    ),
    "What is the phone extension of the IT Service Desk?": (
        "Calling IT support internally, what number do I dial?",
        "it service desk extension",
    ),
    "What is our mobile device management service called?": (
        "My personal phone reads work email, what MDM must it be enrolled in?",
        "mdm service name",
    ),
    # 06-leave
    "How many days of annual leave does a full-time employee get?": (
        "Full-time here, how many paid vacation days per year?",
        "annual leave days full time",
    ),
    "How many unused leave days can I carry over?": (
        "End of year: how many leftover vacation days roll into next year?",
        "leave carry over limit",
    ),
    "From which day of sickness do I need a doctor's note?": (
        "Off sick, at what point is a medical certificate required?",
        "sick note needed from day",
    ),
    "How long is parental leave for the primary carer?": (
        "Expecting a baby as primary carer, how many weeks of paid leave?",
        "primary carer parental leave length",
    ),
    "How many volunteering days do we get per year?": (
        "Charity work: how many paid days a year can I volunteer?",
        "volunteer days allowance",
    ),
    "Where do I request leave?": (
        "Which system do I book my holidays in?",
        "tool for leave requests",
    ),
    # 08-product-lines
    "What payload can a Quill arm lift?": (
        "Spec sheet: max payload of the Quill arm?",
        "quill arm payload kg",
    ),
    "What is the top speed of a Tern robot?": (
        "A customer asks how fast a Tern can drive, what's the max speed?",
        "tern max speed",
    ),
    "Who is the product manager for Kestrel?": (
        "Kestrel vision kit, who's the PM?",
        "kestrel product owner name",
    ),
    "Where are Servo-X actuators built?": (
        "Servo-X production: at which site does it happen?",
        "servo-x manufacturing location",
    ),
    "How long does a Tern robot run on a full battery?": (
        "Tern battery life: hours per full charge?",
        "runtime of tern on one charge",
    ),
    "Which app is used to program Quill arms?": (
        "Programming a Quill arm, which tablet app do I use?",
        "quill programming app",
    ),
    # 10-returns
    "What is the refund window for Servo-X?": (
        "Customer wants to send back a Servo-X, how many days do they have for a refund?",
        "servo-x return period",
    ),
    "What is the refund window for Tern robots?": (
        "Returning a Tern robot: how long is the refund period?",
        "tern refund days",
    ),
    "Which form does a customer use to start a return?": (
        "A customer wants to return something, which form kicks that off?",
        "return request form name",
    ),
    "How long is an RMA number valid?": (
        "RMA validity: after how many days does the number expire?",
        "rma number expiry",
    ),
    "What restocking fee applies to opened Quill arms?": (
        "Opened Quill sent back in working order, what percentage is charged?",
        "quill restocking fee percent",
    ),
    "Where are returned products shipped?": (
        "Returns logistics: to which centre do returned items go?",
        "address for product returns",
    ),
    # 12-onboarding
    "What time does my first day start?": (
        "Starting next week, what time should I arrive on day one?",
        "first day start time",
    ),
    "How long does the Launchpad programme last?": (
        "Onboarding programme length: how many weeks is Launchpad?",
        "launchpad duration",
    ),
    "When must I complete the SEC-100 course?": (
        "New joiner security course SEC-100: by when is it due?",
        "sec-100 deadline",
    ),
    "How long is the probation period?": (
        "For new hires, how many months of probation?",
        "probation length",
    ),
    "When is the meet-the-founders lunch?": (
        "New starter lunch with the founders, which day is that?",
        "founders lunch date for new joiners",
    ),
    # 13-code-review
    "How many approvals does a code change need?": (
        "Before merging, how many reviewers must approve my change?",
        "required approvals per change",
    ),
    "How quickly must a reviewer respond to a review request?": (
        "Got a review request, within what time am I expected to respond?",
        "review response time",
    ),
    "When should a pull request be split?": (
        "My PR is getting big, above how many changed lines should I break it up?",
        "pull request size limit lines",
    ),
    "Which prefix must commit messages start with?": (
        "Commit message format: what prefix goes in front of the ticket number?",
        "commit prefix",
    ),
    "Who must approve changes that touch authentication?": (
        "Touching login code, which team needs to sign off on the review?",
        "approval needed for auth changes",
    ),
    "Which merge strategy do we use?": (
        "Merging a PR: squash, rebase or merge commit?",
        "merge strategy",
    ),
    # 15-data-retention
    "How long is robot telemetry kept?": (
        "Data retention for robot telemetry, how many months?",
        "telemetry retention period",
    ),
    "How long are application logs retained?": (
        "App logs: after how many days are they deleted?",
        "log retention days",
    ),
    "How long are financial records kept?": (
        "Finance documents, how many years must we keep them?",
        "financial records retention",
    ),
    "Who is the Data Protection Officer?": (
        "Privacy question for the DPO: who is that?",
        "name of our dpo",
    ),
    "How quickly are deletion requests processed?": (
        "A customer asked us to erase their data, within how many days must that be done?",
        "deletion request deadline",
    ),
    "How long are backups retained?": (
        "Backup retention: how many days are backups kept?",
        "backups kept for",
    ),
    # 17-remote-work
    "How many days a week must I be in the office?": (
        "Hybrid rules: minimum office days per week?",
        "office attendance per week",
    ),
    "Which days are the office anchor days?": (
        "On which weekdays is everyone expected in the office?",
        "anchor days",
    ),
    "How many days a year may I work from abroad?": (
        "Working remotely from another country, how many days per year is allowed?",
        "work from abroad limit",
    ),
    "How large is the home office stipend?": (
        "Setting up a desk at home, how much does Acme give me once?",
        "home office allowance amount",
    ),
    "What is the company VPN called?": (
        "Connecting from home, what's the name of our VPN?",
        "vpn name",
    ),
    "What are the core hours?": (
        "Meetings-wise, during which hours must I be available?",
        "core working hours",
    ),
    # 18-performance-reviews
    "When do formal performance reviews take place?": (
        "Review season: in which months are the formal reviews?",
        "performance review months",
    ),
    "When do promotions take effect?": (
        "Got promoted, from which date does it count?",
        "promotion effective dates",
    ),
    "When is the self-assessment due?": (
        "Self-review deadline: how long before the review meeting?",
        "self assessment due date",
    ),
    "How many peers give me feedback in a review?": (
        "Peer feedback round, how many colleagues do I pick?",
        "number of peer reviewers",
    ),
    "How long does a formal improvement plan last?": (
        "Performance improvement plan duration in weeks?",
        "pip length",
    ),
    # 20-hiring
    "How much is the referral bonus?": (
        "Referring a friend who gets hired pays how much?",
        "employee referral reward",
    ),
    "How many stages does our interview loop have?": (
        "Candidates go through how many interview rounds?",
        "interview process stages",
    ),
    "What is our applicant tracking system called?": (
        "Recruiting tool: what's the ATS we use?",
        "ats name",
    ),
    "Which training must interviewers complete?": (
        "Before I can interview candidates, what course is required?",
        "interviewer training course",
    ),
    "How soon after the final interview is a hiring decision made?": (
        "Candidate finished the last interview, how many days until a decision?",
        "hiring decision turnaround",
    ),
    "When do summer internship applications close?": (
        "Summer interns: what's the application deadline?",
        "internship application closing date",
    ),
    # 21-procurement
    "Above what amount do I need three quotes?": (
        "Buying from a supplier: from what amount are three written quotes needed?",
        "three quotes threshold",
    ),
    "Who approves purchases above 25,000 EUR?": (
        "Large purchase over 25,000 EUR, whose approval is required?",
        "approver for purchases over 25000 eur",
    ),
    "Who maintains the preferred supplier list?": (
        "Preferred suppliers: who keeps that list up to date?",
        "owner of preferred supplier list",
    ),
    "What are our standard payment terms?": (
        "Supplier invoices: how many days do we take to pay them?",
        "standard payment terms",
    ),
    "What is the monthly limit on a corporate card?": (
        "Company credit card: how much can I spend per month?",
        "corporate card monthly limit",
    ),
    # 23-communication-tools
    "What is the company chat tool?": (
        "Messaging colleagues: which chat app do we use?",
        "company chat tool",
    ),
    "Which tool do we use for video calls?": (
        "Video meetings run on which tool?",
        "video call software",
    ),
    "How quickly should I reply to a direct message?": (
        "Chat etiquette: expected reply time for a DM?",
        "direct message response time",
    ),
    "Above what size should attachments be shared as links?": (
        "Sending a big file: from what size should I share a link instead?",
        "attachment size limit",
    ),
    "Who can post in the #acme-news channel?": (
        "Can anyone post to #acme-news, or only certain teams?",
        "acme-news posting rights",
    ),
    # 24-release-process
    "How often is firmware released?": (
        "Firmware release cadence: every how many weeks?",
        "firmware release frequency",
    ),
    "When does code freeze start?": (
        "Before a release, how many days ahead does the freeze begin?",
        "code freeze start",
    ),
    "Who must sign off a hotfix?": (
        "Shipping an urgent hotfix, whose sign-off is needed?",
        "hotfix approver",
    ),
    "Which version scheme does firmware use?": (
        "Firmware version numbers: what format do they follow?",
        "firmware versioning scheme",
    ),
    "What share of the fleet gets a release first?": (
        "Staged rollout: what percentage of robots get a new release first?",
        "initial rollout share",
    ),
    "How fast can a robot roll back its firmware?": (
        "Bad firmware on a robot: how long does a rollback take?",
        "firmware rollback time",
    ),
    # 26-health-benefits
    "Who is our health insurer?": (
        "Private health cover: which insurance company provides it?",
        "health insurance provider",
    ),
    "What share of the health insurance premium does Acme pay?": (
        "Health insurance cost: what percentage does the company cover?",
        "employer share of health premium",
    ),
    "How much dental treatment is covered?": (
        "Going to the dentist: how much is covered each year?",
        "dental cover limit",
    ),
    "What is the employee assistance programme called?": (
        "Need confidential counselling, what's the programme called?",
        "eap name",
    ),
    "How large is the gym subsidy?": (
        "Gym membership: how much does Acme chip in?",
        "gym allowance per month",
    ),
    "How much does Acme contribute to the pension plan?": (
        "Retirement savings: what percentage of salary does the company put in?",
        "employer pension contribution",
    ),
    "Within how many days must I enrol in health insurance?": (
        "Just started, what's the deadline to sign up for health insurance?",
        "health insurance enrolment window",
    ),
    # 28-shipping
    "What is the cut-off time for same-day shipping?": (
        "Order today, ship today: until what time?",
        "same day shipping cutoff",
    ),
    "Which carrier ships our parcels?": (
        "Parcel deliveries go out with which courier?",
        "parcel carrier",
    ),
    "Above what order value is shipping free?": (
        "Free delivery kicks in from what order total?",
        "free shipping threshold",
    ),
    "What is the lead time for Tern robots?": (
        "A customer orders a Tern, how long until it's delivered?",
        "tern delivery time",
    ),
    "How much is the Quill crate deposit?": (
        "Quill shipping crate: how much deposit is refunded on return?",
        "crate deposit quill",
    ),
    "What do our tracking numbers start with?": (
        "Shipment tracking codes begin with which letters?",
        "tracking number prefix",
    ),
    # 29-information-security
    "How long must a password be?": (
        "Setting a new password, what's the minimum length?",
        "password minimum characters",
    ),
    "After how long does a company laptop lock itself?": (
        "Idle laptop: after how many minutes does the screen lock?",
        "auto lock timeout",
    ),
    "When is the annual security training due?": (
        "Yearly security course: what's the deadline?",
        "security training due date",
    ),
    "What are the information classification levels?": (
        "Labelling documents, which classification levels exist?",
        "data classification labels",
    ),
    "Which extension do I call to report a security incident?": (
        "Suspect a breach, which internal number do I ring?",
        "security incident phone extension",
    ),
    "How often are access rights reviewed?": (
        "System access: how frequently are permissions reviewed?",
        "access review interval",
    ),
}

# (first training question, second training question, question, answer sentence)
PAIRS: list[tuple[str, str, str, str]] = [
    (
        "What is the hotel limit per night in a standard city?",
        "What is the daily meal allowance when travelling abroad?",
        "Trip budget: hotel cap per night in a standard city, and meal allowance per day abroad?",
        "Hotels in standard cities are capped at 180 EUR"
        " per night and meals abroad at 55 EUR per day.",
    ),
    (
        "How often are laptops replaced?",
        "After how long does a company laptop lock itself?",
        "How often do laptops get refreshed, and after how long do they lock when idle?",
        "Laptops are refreshed every 36 months and"
        " lock automatically after 5 minutes without activity.",
    ),
    (
        "What is the top speed of a Tern robot?",
        "What is the lead time for Tern robots?",
        "Tern robots: top speed, and delivery lead time?",
        "A Tern robot drives at up to 1.8 metres per second and has a lead time of 3 weeks.",
    ),
    (
        "How much is the Quill crate deposit?",
        "What restocking fee applies to opened Quill arms?",
        "For Quill arms, what are the crate deposit and the restocking fee when opened?",
        "The Quill crate deposit is 90 EUR, and opened Quill units carry a 12% restocking fee.",
    ),
    (
        "How many days of annual leave does a full-time employee get?",
        "How many days a year may I work from abroad?",
        "Vacation days for full-timers, and days per year I can work from abroad?",
        "Full-time employees get 27 days of annual leave and"
        " may work from abroad for 20 working days a year.",
    ),
    (
        "Who is the Data Protection Officer?",
        "Which extension do I call to report a security incident?",
        "Who is the DPO, and what extension takes security incident reports?",
        "The Data Protection Officer is Lucía Fernhill,"
        " and security incidents go to extension 2911.",
    ),
    (
        "Who approves expense claims above 2,000 EUR?",
        "Who approves purchases above 25,000 EUR?",
        "Sign-offs: who approves claims over 2,000 EUR and purchases over 25,000 EUR?",
        "Helga Marsden approves claims above 2,000 EUR"
        " and Marek Ostrander approves purchases above 25,000 EUR.",
    ),
    (
        "What is the company chat tool?",
        "What is the company VPN called?",
        "Names of our chat tool and our VPN?",
        "The company chat is Murmur and the VPN is called Tollgate.",
    ),
    (
        "How many approvals does a code change need?",
        "How often is firmware released?",
        "Approvals needed per change, and how often firmware ships?",
        "Every change needs 2 approvals, and firmware is released every 6 weeks.",
    ),
    (
        "How large is the gym subsidy?",
        "How large is the home office stipend?",
        "Money for the gym and for a home office setup: how much of each?",
        "The gym subsidy is 30 EUR per month and the one-time home office stipend is 400 EUR.",
    ),
    (
        "How much is the referral bonus?",
        "How long is the probation period?",
        "Referral bonus amount, and probation length for the new hire?",
        "The referral bonus is 2,500 EUR and the probation period is 3 months.",
    ),
    (
        "Who is the CEO of Acme Robotics?",
        "Who is the product manager for Kestrel?",
        "Two names please: our chief executive and the Kestrel product manager.",
        "The chief executive is Odile Fairbrook and"
        " the Kestrel product manager is Mei Lindqvist-Oduya.",
    ),
    (
        "Which carrier ships our parcels?",
        "Which travel agency do we book trips with?",
        "Which courier ships our parcels, and which agency books our business trips?",
        "Parcels ship with Gullwing Logistics, and trips are booked through Bluecompass Travel.",
    ),
    (
        "Who is our health insurer?",
        "Where do I request leave?",
        "Health insurer name, and the system where leave is requested?",
        "Health insurance is provided by Meridian Mutual, and leave is requested in Tempo.",
    ),
    (
        "How long does the Launchpad programme last?",
        "How long does a formal improvement plan last?",
        "Length of Launchpad onboarding versus a formal improvement plan?",
        "The Launchpad programme lasts 6 weeks and a formal improvement plan lasts 8 weeks.",
    ),
    (
        "What are our standard payment terms?",
        "How long do I have to file an expense claim?",
        "Supplier payment terms, and my deadline to file an expense claim?",
        "Standard payment terms are 60 days net, and expense claims must be filed within 30 days.",
    ),
]

# (topical training page, question the handbook does not answer)
UNANSWERABLE: list[tuple[str, str]] = [
    ("06-leave", "Is there a sabbatical programme for long-serving staff?"),
    ("02-travel", "Which frequent flyer programme should I join for work trips?"),
    ("13-code-review", "Which linter configuration do reviewers enforce?"),
    ("17-remote-work", "May I bring my dog into the office on anchor days?"),
    ("26-health-benefits", "Does Acme provide life insurance?"),
    ("13-code-review", "What code coverage percentage must a pull request reach?"),
    ("20-hiring", "Does Acme sponsor work visas for new hires?"),
    ("01-welcome", "What was Acme Robotics' revenue last year?"),
    ("20-hiring", "What is the starting salary for a junior engineer?"),
    ("18-performance-reviews", "How large is the yearly performance bonus?"),
    ("06-leave", "Does Acme match charity donations made by employees?"),
    ("08-product-lines", "How much does a Quill arm weigh?"),
    ("08-product-lines", "What does a Kestrel vision kit cost?"),
    ("24-release-process", "Which programming language is the firmware written in?"),
    ("28-shipping", "How much is the deposit on a Tern pallet?"),
    ("01-welcome", "In which year did the Brenmoor site open?"),
    ("15-data-retention", "Which cloud provider hosts customer data?"),
    ("03-expenses", "What late fee applies to expense claims filed after 30 days?"),
    ("24-release-process", "Who is the release manager this quarter?"),
    ("05-it-equipment", "Which operating system do company laptops run?"),
    ("29-information-security", "How often must I change my password?"),
    ("20-hiring", "Does Acme pay relocation costs for new hires?"),
]
