"""Forum / community chatter and page boilerplate (cookie banners, login forms,
navigation, footers, copyright lines): the low end of the educational scale.
"""

FORUM = [
    {
        "id": "ko-0025",
        "category": "forum",
        "url": "https://community.example.kr/board/humor/230981",
        "text": "ㅋㅋㅋㅋㅋㅋ 이거 완전 나잖아 ㅠㅠ",
    },
    {
        "id": "ko-0026",
        "category": "forum",
        "url": "https://community.example.kr/board/it/118204",
        "text": """\
노트북 추천 좀 해주세요 ㅠㅠ

대학 신입생인데 노트북 사야 돼서요. 예산은 100만 원 안쪽이고 주로 과제, 문서 작업, 유튜브 정도 할 것 같아요. 가끔 롤도 할 수도? 매일 들고 다녀야 해서 무게는 가벼웠으면 좋겠어요.. 맥북 에어랑 그램 중에 고민 중인데 뭐가 나을까요? 고수님들 조언 부탁드립니다 🙏

└ 과제만 하면 에어 ㄱㄱ 근데 롤 할 거면 윈도우가 편함
└ 그램 16인치 쓰는데 가볍고 배터리 오래 가서 만족함
└ 전공이 뭔지에 따라 다름. 공대면 윈도우 추천""",
    },
    {
        "id": "ko-0027",
        "category": "forum",
        "url": "https://community.example.kr/board/free/502113",
        "text": """\
아 배고파 죽겠다 야식 뭐 먹지?? 치킨 vs 떡볶이 골라줘 3분 안에 ㅋㅋ

ㄴ 떡볶이에 튀김 추가 국룰
ㄴ 치킨 먹고 내일 후회하자
ㄴ 둘 다 시키면 됨 ㅇㅇ""",
    },
    {
        "id": "ko-0028",
        "category": "forum",
        "url": "https://game.example.com/forum/general/77731",
        "text": """\
이번 패치 진짜 누가 만든 거냐

아니 궁수 딜 너프한 건 그렇다 치는데 왜 전사 상향은 안 해줌?? 레이드 들어가면 다 마법사만 찾고 궁수는 파티도 안 받아줌 ㅡㅡ 운영진 게임 안 해보고 밸런스 잡는 듯. 한 달 동안 강화에 쏟아부은 골드 생각하면 현타 오네요.. 접을까 고민 중임

└ 저도 궁수인데 공감 백배요
└ 다음 주 핫픽스 나온다는 말 있던데 좀만 기다려 보셈
└ 접지 마요 ㅠ 우리 길드 궁수 님밖에 없음""",
    },
    {
        "id": "ko-0029",
        "category": "forum",
        "url": "https://community.example.kr/board/study/40577",
        "text": """\
중2 수학 질문이요!! 연립방정식

x + y = 10, 2x − y = 5 이거 어떻게 풀어요? 가감법으로 하라는데 뭘 더하고 빼는 건지 모르겠어요 ㅠㅠ 내일 수행평가라 급해요

ㄴ 두 식을 그냥 더해 봐요. y가 +y랑 -y라서 없어지고 3x = 15 나오니까 x = 5. 그다음에 첫 번째 식에 x = 5 넣으면 y = 5. 이렇게 한 문자를 없애려고 식끼리 더하거나 빼는 게 가감법이에요
ㄴ 와 감사합니다!! 이해됐어요 ㅎㅎ
ㄴ 답 나오면 두 식에 다 넣어서 맞는지 확인하는 습관 들이세요 실수 줄어듦""",
    },
    {
        "id": "ko-0030",
        "category": "forum",
        "url": "https://community.example.kr/board/life/96420",
        "text": """\
드디어 이사 끝났어요~ 후기 남깁니다

포장이사 업체 세 군데 견적 받아 보고 제일 중간 가격인 데로 했는데 대만족이에요. 아침 8시에 오셔서 오후 3시쯤 다 끝났고, 냉장고 안에 있던 반찬통까지 그대로 옮겨서 정리해 주셨어요. 다만 책장 하나 뒤쪽이 좀 긁혔는데 말씀드리니까 바로 보상해 주겠다고 하시더라고요. 이사 앞두신 분들은 견적 받을 때 사다리차 비용 포함인지 꼭 확인하세요! 저는 그거 몰라서 처음에 헷갈렸음 ㅋㅋ

이제 집들이 음식 뭐 할지 고민해야겠네요 ㅎㅎ""",
    },
    {
        "id": "ko-0031",
        "category": "forum",
        "url": "https://fan.example.kr/talk/330192",
        "text": "오늘 콘서트 다녀온 사람 손!!!! 🙋‍♀️ 앵콜 때 막내 우는 거 보고 나도 같이 울었잖아 ㅠㅠㅠ 셋리 미쳤고 음향도 저번보다 훨씬 좋았음. 굿즈 줄 세 시간 서서 응원봉 겨우 샀다... 다리 아파 죽겠는데 행복해 ㅎㅎ 담 주 막콘도 가는 사람?",
    },
    {
        "id": "ko-0032",
        "category": "forum",
        "url": "https://stock.example.com/board/talk/1203398",
        "text": "물린 지 6개월째... 존버는 승리한다 맞죠? 🥲",
    },
]

BOILERPLATE = [
    {
        "id": "ko-0033",
        "category": "boilerplate",
        "url": "https://www.example.com/",
        "text": """\
이 웹사이트는 서비스 제공과 이용자 경험 개선, 맞춤형 광고를 위해 쿠키를 사용합니다. '모두 동의'를 클릭하면 쿠키 저장에 동의하는 것으로 간주됩니다. 자세한 내용은 개인정보처리방침을 확인하세요.
[모두 동의] [필수 쿠키만 허용] [설정]""",
    },
    {
        "id": "ko-0034",
        "category": "boilerplate",
        "url": "https://member.example.kr/login",
        "text": """\
로그인
아이디
비밀번호
□ 로그인 상태 유지
로그인
아이디 찾기 | 비밀번호 찾기 | 회원가입
또는
카카오로 시작하기
네이버로 시작하기""",
    },
    {
        "id": "ko-0035",
        "category": "boilerplate",
        "url": "https://corp.example.com/about",
        "text": "Copyright © (주)예제컴퍼니. All Rights Reserved.",
    },
    {
        "id": "ko-0036",
        "category": "boilerplate",
        "url": "https://shop.example.com/help/faq",
        "text": """\
홈 > 고객센터 > 자주 묻는 질문
전체 메뉴 보기
회사소개 | 사업분야 | 뉴스룸 | 인재채용 | 고객센터
검색어를 입력하세요
인기 검색어 1 여름 원피스 2 선풍기 3 캠핑 의자 4 물놀이 용품 5 제습기
맨 위로""",
    },
    {
        "id": "ko-0037",
        "category": "boilerplate",
        "url": "https://www.example.kr/old/page.html",
        "text": """\
요청하신 페이지를 찾을 수 없습니다.
방문하시려는 페이지의 주소가 잘못 입력되었거나, 페이지의 주소가 변경 혹은 삭제되어 요청하신 페이지를 찾을 수 없습니다. 입력하신 주소가 정확한지 다시 한번 확인해 주시기 바랍니다.
[이전 페이지] [메인으로]""",
    },
    {
        "id": "ko-0038",
        "category": "boilerplate",
        "url": "https://shop.example.kr/",
        "text": """\
회사소개 | 이용약관 | 개인정보처리방침 | 청소년보호정책 | 이메일무단수집거부 | 제휴문의
(주)예제쇼핑 | 대표이사 홍길동 | 서울특별시 가상구 예제로 123, 4층
사업자등록번호 000-00-00000 | 통신판매업신고 제0000-서울가상-0000호
고객센터 1588-0000 (평일 09:00~18:00, 점심시간 12:00~13:00, 주말·공휴일 휴무)
이메일 help@shop.example.kr
(주)예제쇼핑은 통신판매중개자로서 거래 당사자가 아니며, 입점 판매자가 등록한 상품 정보 및 거래에 대해 책임을 지지 않습니다.
© 예제쇼핑 Corp. All rights reserved.""",
    },
    {
        "id": "ko-0039",
        "category": "boilerplate",
        "url": "https://blog.example.kr/newsletter",
        "text": """\
뉴스레터 구독하기
매주 월요일 아침, 놓치면 아쉬운 소식을 메일함으로 보내 드립니다.
이메일 주소를 입력하세요 [구독]
□ 개인정보 수집 및 이용에 동의합니다. (필수)
구독은 언제든지 해지할 수 있습니다.""",
    },
    {
        "id": "ko-0040",
        "category": "boilerplate",
        "url": "https://news.example.kr/economy/article/20240711-0031#footer",
        "text": "ⓒ 예제일보(news.example.kr), 무단 전재 및 재배포 금지",
    },
]

DOCUMENTS = FORUM + BOILERPLATE
