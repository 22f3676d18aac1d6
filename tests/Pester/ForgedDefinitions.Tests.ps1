# Issue 13, points 2-4: a backup server that forges a set cannot turn Test-KvmBackup -Boot or Restore-KvmBackup
# -NewName against the host. The sets are forged from a real backup of lab_forgeddef, as an attacker who controls
# the store would (ForgedSetHelpers.ps1: digests recomputed): a domain.xml that names host files (qemu:commandline,
# a static root seclabel, an initrd and an emulator of the host), a qcow2 copy whose backing file is a host file, a
# copy in another format than backup.json says. Every QEMU process is watched while the tests run (its command line,
# its open files, its environment) and libvirt's log of each throw-away VM is read afterwards: no QEMU may name or
# open a host file that a set named. Each boot test runs in a child pwsh with a bound, so a hang is a failure.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    . (Join-Path $PSScriptRoot 'ForgedSetHelpers.ps1')
    $script:Vm = 'lab_forgeddef'
    Initialize-Lab -VmName $Vm   # fresh disks, started, agent answering; throws (failing every test) when the lab cannot start
    $script:Pwsh = @(if (Test-Path (Join-Path $PSHOME 'pwsh')) { Join-Path $PSHOME 'pwsh' } else { 'dotnet'; Join-Path $PSHOME 'pwsh.dll' })
    $script:QemuNs = 'http://libvirt.org/schemas/domain/qemu/1.0'
    $script:QemuLogs = '/var/log/libvirt/qemu'
    $script:Started = Get-Date

    # The host files a forged set names: data an attacker would like QEMU to open, an initrd of the host, and an
    # "emulator" that records that it ran before it runs the real QEMU.
    $script:HostDir = New-TestFolder forged-host
    $script:Sentinel = Join-Path $HostDir 'host-secret.raw'
    $bytes = [byte[]]::new(1MB); [Random]::new(13).NextBytes($bytes); [IO.File]::WriteAllBytes($Sentinel, $bytes)
    $script:SentinelHash = (Get-FileHash -LiteralPath $Sentinel -Algorithm SHA256).Hash
    $script:HostInitrd = Join-Path $HostDir 'host-initrd.img'
    Copy-Item -LiteralPath (Join-Path (Get-LabRoot) 'guest/initrd.img') -Destination $HostInitrd
    $script:EvilEmulator = Join-Path $HostDir 'evil-emulator'
    $script:EvilMarker = Join-Path $HostDir 'evil-emulator-ran'
    Set-Content -LiteralPath $EvilEmulator -Value "#!/bin/sh`necho `"`$@`" >> '$EvilMarker'`nexec /usr/bin/qemu-system-x86_64 `"`$@`"`n" -NoNewline
    & chmod 0755 $EvilEmulator
    $script:EnvMarker = 'ODAKVM_FORGED_ENV=planted-by-the-set'
    $script:Watched = @($Sentinel, $HostInitrd, $EvilEmulator)

    # The real set.
    $script:Backup = New-TestFolder forged-backup
    $retention = New-TestFolder forged-retention
    $objects = Get-VmDisk $Vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination $Backup | Invoke-BlockCommit | Move-OverlayToRetention -Path $retention
    $script:RealSet = Join-Path $Backup "$Vm/$($objects[0].RunId)"
    if ((Get-Content -Raw (Join-Path $RealSet 'backup.json') | ConvertFrom-Json).Status -ne 'Complete') { throw "the real set $RealSet is not Complete" }
    $script:HostEmulator = ([xml](Invoke-Virsh @('domcapabilities', '--virttype', 'qemu', '--arch', 'x86_64', '--machine', 'pc')).StdOut).domainCapabilities.path
    $own = ([xml](Invoke-Virsh @('dumpxml', $Vm, '--inactive')).StdOut).domain.os
    $script:OwnBootFiles = @($own.kernel, $own.initrd)

    # Edits a forged set's domain.xml as an XmlDocument.
    function Edit-SetDomainXml([string] $Folder, [scriptblock] $Edit) {
        $path = Join-Path $Folder 'domain.xml'
        $xml = [xml](Get-Content -Raw -LiteralPath $path)
        & $Edit $xml
        $xml.Save($path)
    }
    # <qemu:commandline> that gives QEMU a host file as a drive and sets a variable in its environment, the qemu
    # namespace declared on <domain> as libvirt wants it; and a static DAC label that runs QEMU as root.
    function Add-HostTakeover([xml] $Xml) {
        $Xml.DocumentElement.SetAttribute('xmlns:qemu', $QemuNs)
        $line = $Xml.CreateElement('qemu', 'commandline', $QemuNs)
        foreach ($value in '-drive', "file=$Sentinel,format=raw,if=none,id=forged0") {
            $arg = $Xml.CreateElement('qemu', 'arg', $QemuNs); $arg.SetAttribute('value', $value); [void]$line.AppendChild($arg)
        }
        $name, $value = $EnvMarker -split '=', 2
        $env = $Xml.CreateElement('qemu', 'env', $QemuNs); $env.SetAttribute('name', $name); $env.SetAttribute('value', $value); [void]$line.AppendChild($env)
        [void]$Xml.DocumentElement.AppendChild($line)
        $label = $Xml.CreateElement('seclabel'); $label.SetAttribute('type', 'static'); $label.SetAttribute('model', 'dac'); $label.SetAttribute('relabel', 'yes')
        $text = $Xml.CreateElement('label'); $text.InnerText = '+0:+0'; [void]$label.AppendChild($text)
        [void]$Xml.DocumentElement.AppendChild($label)
    }

    # What each running QEMU names or holds of the watched files, right now.
    function Find-QemuUse {
        foreach ($proc in [IO.Directory]::GetDirectories('/proc')) {
            if ((Split-Path -Leaf $proc) -notmatch '^\d+$') { continue }
            try {
                $cmdline = [IO.File]::ReadAllText("$proc/cmdline")
                if ($cmdline -notmatch 'qemu-system') { continue }
                $id = Split-Path -Leaf $proc
                foreach ($path in $Watched) { if ($cmdline.Contains($path)) { "QEMU $id names $path in its command line" } }
                foreach ($fd in [IO.Directory]::GetFiles("$proc/fd")) {
                    $target = ([IO.FileInfo]::new($fd)).LinkTarget
                    if ($target -in $Watched) { "QEMU $id has $target open" }
                }
                if ([IO.File]::ReadAllText("$proc/environ").Contains($EnvMarker)) { "QEMU $id has $EnvMarker in its environment" }
            }
            catch { }   # the process ended meanwhile
        }
    }

    # Runs Test-KvmBackup -Boot of a set in a child pwsh, bounded, watching every QEMU meanwhile. $WhileRunning is
    # called on each round (with the boot test's domain name once it runs). A child past its bound is killed and
    # reported as TimedOut.
    function Invoke-BoundedBootTest([string] $Set, [int] $BootTimeoutSec = 120, [int] $BoundSec = 300, [hashtable] $Environment = @{}, [scriptblock] $WhileRunning) {
        $id = [guid]::NewGuid().ToString('N').Substring(0, 8)
        $out = Join-Path $env:ODAKVM_TEST_SCRATCH "boot-$id.json"
        $verbose = Join-Path $env:ODAKVM_TEST_SCRATCH "boot-$id.verbose"
        $script = Join-Path $env:ODAKVM_TEST_SCRATCH "boot-$id.ps1"
        $envLines = ($Environment.GetEnumerator() | ForEach-Object { "`$env:$($_.Key) = '$($_.Value)'" }) -join "`n"
        Set-Content -LiteralPath $script -Value @"
$envLines
Import-Module '$ModuleManifest'
`$errs = `$null
`$r = Test-KvmBackup -Path '$Set' -Boot -BootTimeoutSec $BootTimeoutSec -ErrorVariable errs -ErrorAction SilentlyContinue -Verbose 4> '$verbose'
[pscustomobject]@{
    Passed = `$r.Passed; BootTested = `$r.BootTested; BootResult = `$r.BootResult; BootTestDomain = `$r.BootTestDomain; Problems = @(`$r.Problems)
    Errors = @(`$errs | ForEach-Object { [pscustomobject]@{ Id = `$_.FullyQualifiedErrorId; Message = "`$_" } })
} | ConvertTo-Json -Depth 5 | Set-Content -LiteralPath '$out'
"@
        $child = Start-Process -FilePath $Pwsh[0] -ArgumentList (@($Pwsh | Select-Object -Skip 1) + '-NoProfile', '-File', $script) -PassThru `
            -RedirectStandardOutput "$out.stdout" -RedirectStandardError "$out.stderr"
        $hits = [Collections.Generic.List[string]]::new()
        $deadline = (Get-Date).AddSeconds($BoundSec)
        while (-not $child.HasExited -and (Get-Date) -lt $deadline) {
            foreach ($hit in Find-QemuUse) { $hits.Add($hit) }
            if ($WhileRunning) {
                $domain = @((Invoke-Virsh @('list', '--name')).StdOut -split "`n" | ForEach-Object Trim | Where-Object { $_ -like "$Vm-boottest-*" }) | Select-Object -First 1
                & $WhileRunning $domain
            }
            Start-Sleep -Milliseconds 200
        }
        $timedOut = -not $child.HasExited
        if ($timedOut) { & kill -KILL $child.Id; $child.WaitForExit() }
        foreach ($hit in Find-QemuUse) { $hits.Add($hit) }
        [pscustomobject]@{
            TimedOut = $timedOut
            Result = if (Test-Path -LiteralPath $out) { Get-Content -Raw -LiteralPath $out | ConvertFrom-Json } else { $null }
            Hits = @($hits | Sort-Object -Unique)
            Verbose = if (Test-Path -LiteralPath $verbose) { Get-Content -Raw -LiteralPath $verbose } else { '' }
            StdErr = if (Test-Path -LiteralPath "$out.stderr") { Get-Content -Raw -LiteralPath "$out.stderr" } else { '' }
        }
    }

    # libvirt's logs of this file's throw-away VMs (each holds the QEMU command line it ran), written since it began.
    function Get-BootTestQemuLogs {
        @(Get-ChildItem -LiteralPath $QemuLogs -Filter "$Vm-boottest-*.log" -ErrorAction SilentlyContinue | Where-Object LastWriteTime -ge $Started)
    }
    function Get-BootTestLeftovers {
        @((Invoke-Virsh @('list', '--all', '--name')).StdOut -split "`n" | ForEach-Object Trim | Where-Object { $_ -like "$Vm-boottest-*" }) +
        @(if (Test-Path (Join-Path $env:ODAKVMBACKUP_STATE_DIR 'boot-tests')) { Get-ChildItem -Force (Join-Path $env:ODAKVMBACKUP_STATE_DIR 'boot-tests') | ForEach-Object FullName })
    }
    # Every host path in a definition: attribute values and texts that start with '/'.
    function Get-XmlPaths([string] $Xml) {
        $doc = [xml]$Xml
        @($doc.SelectNodes('//@*') | Where-Object { $_.Value.StartsWith('/') } | ForEach-Object { "$($_.OwnerElement.LocalName)@$($_.LocalName)=$($_.Value)" }) +
        @($doc.SelectNodes('//*[not(*)]') | Where-Object { $_.InnerText.Trim().StartsWith('/') } | ForEach-Object { "$($_.LocalName)=$($_.InnerText.Trim())" })
    }

    # The forged sets, each alone under a destination of its own.
    $script:TakeoverWithInitrd = New-ForgedSet -From $RealSet -Destination (New-TestFolder forged-initrd) -Tamper {
        param($Folder, $Manifest)
        Edit-SetDomainXml $Folder { param($x) Add-HostTakeover $x; $x.domain.os.initrd = $HostInitrd }
    }
    $script:TakeoverWithEmulator = New-ForgedSet -From $RealSet -Destination (New-TestFolder forged-emulator) -Tamper {
        param($Folder, $Manifest)
        Edit-SetDomainXml $Folder { param($x) Add-HostTakeover $x; $x.domain.devices.emulator = $EvilEmulator }
    }
    $script:BackedByHostFile = New-ForgedSet -From $RealSet -Destination (New-TestFolder forged-backing) -Tamper {
        param($Folder, $Manifest)
        & qemu-img rebase -u -f qcow2 -b $Sentinel -F raw (Join-Path $Folder 'linux_boot')
        if ($LASTEXITCODE) { throw 'qemu-img rebase failed' }
    }
    $script:Qcow2ClaimingRaw = New-ForgedSet -From $RealSet -Destination (New-TestFolder forged-q2raw) -Tamper {
        param($Folder, $Manifest)
        ($Manifest.Disks | Where-Object Target -eq 'vda').Format = 'raw'
    }
    $script:RawClaimingQcow2 = New-ForgedSet -From $RealSet -Destination (New-TestFolder forged-raw2q) -Tamper {
        param($Folder, $Manifest)
        ($Manifest.Disks | Where-Object Target -eq 'vdb').Format = 'qcow2'
    }
    # The copies as the attacker made them: the digests agree, so only the checks that matter can stop the sets.
    (& qemu-img info --output=json -U (Join-Path $BackedByHostFile 'linux_boot') | ConvertFrom-Json).'backing-filename' | Should -Be $Sentinel
}

AfterAll {
    foreach ($name in @((Invoke-Virsh @('list', '--all', '--name')).StdOut -split "`n" | ForEach-Object Trim | Where-Object { $_ -like "$Vm*" })) {
        Invoke-Virsh @('destroy', $name) -AllowFailure | Out-Null
        Invoke-Virsh @('undefine', $name, '--snapshots-metadata') -AllowFailure | Out-Null
    }
    foreach ($disk in 'boot', 'data') { Remove-Item -LiteralPath (Split-Path (Get-LabDiskPath -Name $Vm -Disk $disk)) -Recurse -Force -ErrorAction SilentlyContinue }
    Get-ChildItem -LiteralPath $QemuLogs -Filter "$Vm*.log" -ErrorAction SilentlyContinue | Remove-Item -Force -ErrorAction SilentlyContinue
}

Describe 'Test-KvmBackup -Boot of a forged set' {
    It 'never gives QEMU the host files of a domain.xml with qemu:commandline, a root seclabel and a host initrd: refused with the reason, within its bound' {
        $run = Invoke-BoundedBootTest -Set $TakeoverWithInitrd -BootTimeoutSec 60 -BoundSec 240
        $run.TimedOut | Should -BeFalse -Because 'a boot test is bounded'
        $run.Hits | Should -BeNullOrEmpty
        $run.Result.Passed | Should -BeFalse
        $run.Result.Errors.Id | Should -Contain 'DomainXmlNotRestorable,OdaKvmBackup.Commands.TestKvmBackupCommand'
        ($run.Result.Problems -join ' ') | Should -Match ([regex]::Escape("<initrd>$HostInitrd"))
        foreach ($log in Get-BootTestQemuLogs) { Get-Content -Raw -LiteralPath $log.FullName | Should -Not -Match ([regex]::Escape($Sentinel)) }
        (Get-FileHash -LiteralPath $Sentinel -Algorithm SHA256).Hash | Should -Be $SentinelHash
        Get-BootTestLeftovers | Should -BeNullOrEmpty
    }

    It 'boots a definition rebuilt without qemu:commandline, qemu:env, the root seclabel and the set''s emulator, and says what it left out' {
        $script:LiveXml = $null
        $run = Invoke-BoundedBootTest -Set $TakeoverWithEmulator -BootTimeoutSec 120 -BoundSec 300 -WhileRunning {
            param($domain)
            if ($domain -and -not $script:LiveXml) { $script:LiveXml = (Invoke-Virsh @('dumpxml', $domain) -AllowFailure).StdOut }
        }
        $run.TimedOut | Should -BeFalse
        $run.Hits | Should -BeNullOrEmpty
        Test-Path -LiteralPath $EvilMarker | Should -BeFalse -Because 'the emulator of the set must never run'
        $run.Result.Passed | Should -BeTrue -Because ($run.Result.Problems -join ' ')
        $run.Result.BootResult | Should -Be 'guest agent answered guest-ping'
        $LiveXml | Should -Not -BeNullOrEmpty -Because 'the throw-away VM was seen running'
        $LiveXml | Should -Not -Match ([regex]::Escape($QemuNs))
        # The set's static label is gone; the host's own default applies (on the lab, qemu.conf runs QEMU as root: a
        # dynamic dac label +0:+0, which the set did not choose).
        $LiveXml | Should -Not -Match "<seclabel type='static'"
        ([xml]$LiveXml).domain.devices.emulator | Should -Be $HostEmulator
        $logs = @(Get-BootTestQemuLogs | Where-Object Name -eq "$($run.Result.BootTestDomain).log")
        $logs.Count | Should -Be 1 -Because 'libvirt logs the QEMU command line of the throw-away VM'
        $logText = Get-Content -Raw -LiteralPath $logs[0].FullName
        $logText | Should -Not -Match ([regex]::Escape($Sentinel))
        $logText | Should -Not -Match ([regex]::Escape($EvilEmulator))
        $run.Verbose | Should -Match 'qemu:commandline'
        $run.Verbose | Should -Match 'seclabel'
        (Get-FileHash -LiteralPath $Sentinel -Algorithm SHA256).Hash | Should -Be $SentinelHash
        Get-BootTestLeftovers | Should -BeNullOrEmpty
    }

    It 'refuses a qcow2 copy whose backing file is a host file, before QEMU or qemu-img create sees it' {
        $run = Invoke-BoundedBootTest -Set $BackedByHostFile -BootTimeoutSec 60 -BoundSec 240
        $run.TimedOut | Should -BeFalse
        $run.Hits | Should -BeNullOrEmpty
        $run.Result.Passed | Should -BeFalse
        $run.Result.Errors.Id | Should -Contain 'BackupCopyUnsafe,OdaKvmBackup.Commands.TestKvmBackupCommand'
        ($run.Result.Problems -join ' ') | Should -Match "linux_boot.*backing file.*$([regex]::Escape($Sentinel))"
        Get-BootTestQemuLogs | Where-Object { (Get-Content -Raw -LiteralPath $_.FullName).Contains($Sentinel) } | Should -BeNullOrEmpty
        Get-BootTestLeftovers | Should -BeNullOrEmpty
    }

    It 'refuses a copy that is not in the format backup.json says: <Case>' -ForEach @(
        @{ Case = 'a qcow2 copy said to be raw'; Set = 'Qcow2ClaimingRaw'; File = 'linux_boot' }
        @{ Case = 'a raw copy said to be qcow2'; Set = 'RawClaimingQcow2'; File = 'disco_secundario' }
    ) {
        $run = Invoke-BoundedBootTest -Set (Get-Variable -Scope Script -Name $Set -ValueOnly) -BootTimeoutSec 30 -BoundSec 180
        $run.TimedOut | Should -BeFalse
        $run.Result.Passed | Should -BeFalse
        $run.Result.Errors.Id | Should -Contain 'BackupCopyUnsafe,OdaKvmBackup.Commands.TestKvmBackupCommand'
        ($run.Result.Problems -join ' ') | Should -Match $File
        Get-BootTestLeftovers | Should -BeNullOrEmpty
    }
}

Describe 'Restore-KvmBackup -NewName of a forged set' {
    It 'refuses a domain.xml whose initrd is not the one the host''s own definition of the VM uses, defining and writing nothing' {
        $folder = New-TestFolder forged-restore-initrd
        Restore-KvmBackup -Path $TakeoverWithInitrd -Destination $folder -NewName "$Vm-copy1" -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $errs[0].FullyQualifiedErrorId | Should -Be 'DomainXmlNotRestorable,OdaKvmBackup.Commands.RestoreKvmBackupCommand'
        "$($errs[0])" | Should -Match ([regex]::Escape($HostInitrd))
        (Invoke-Virsh @('domstate', "$Vm-copy1") -AllowFailure).ExitCode | Should -Not -Be 0
        @(Get-ChildItem -LiteralPath $folder -Force).Count | Should -Be 0
    }

    It 'defines a domain with no qemu namespace, no static seclabel, the host''s emulator and no host path but its own files and the VM''s boot files' {
        $folder = New-TestFolder forged-restore-emulator
        $restored = Restore-KvmBackup -Path $TakeoverWithEmulator -Destination $folder -NewName "$Vm-copy2" -Verbose 4>&1 | Tee-Object -Variable all | Where-Object { $_ -isnot [System.Management.Automation.VerboseRecord] }
        $restored.Mode | Should -Be 'NewDomain'
        $xml = (Invoke-Virsh @('dumpxml', "$Vm-copy2", '--inactive')).StdOut
        $xml | Should -Not -Match ([regex]::Escape($QemuNs))
        $xml | Should -Not -Match "type='static'"
        $xml | Should -Not -Match '\+0:\+0'
        ([xml]$xml).domain.devices.emulator | Should -Be $HostEmulator
        foreach ($path in Get-XmlPaths $xml) {
            $value = ($path -split '=', 2)[1]
            ($value.StartsWith("$folder/") -or $value -eq $HostEmulator -or $value -in $OwnBootFiles) | Should -BeTrue -Because "$path is a host path in the definition"
        }
        (@($all | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] }).Message -join "`n") | Should -Match 'qemu:commandline'
        Test-Path -LiteralPath $EvilMarker | Should -BeFalse
    }

    It 'refuses a qcow2 copy whose backing file is a host file: nothing defined, no file placed' {
        $folder = New-TestFolder forged-restore-backing
        Restore-KvmBackup -Path $BackedByHostFile -Destination $folder -NewName "$Vm-copy3" -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $errs[0].FullyQualifiedErrorId | Should -Be 'BackupCopyUnsafe,OdaKvmBackup.Commands.RestoreKvmBackupCommand'
        "$($errs[0])" | Should -Match ([regex]::Escape($Sentinel))
        (Invoke-Virsh @('domstate', "$Vm-copy3") -AllowFailure).ExitCode | Should -Not -Be 0
        @(Get-ChildItem -LiteralPath $folder -Force).Count | Should -Be 0
    }

    It 'refuses a copy that is not in the format backup.json says: <Case>' -ForEach @(
        @{ Case = 'a qcow2 copy said to be raw'; Set = 'Qcow2ClaimingRaw'; Name = 'copy4' }
        @{ Case = 'a raw copy said to be qcow2'; Set = 'RawClaimingQcow2'; Name = 'copy5' }
    ) {
        $folder = New-TestFolder "forged-restore-$Name"
        Restore-KvmBackup -Path (Get-Variable -Scope Script -Name $Set -ValueOnly) -Destination $folder -NewName "$Vm-$Name" -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $errs[0].FullyQualifiedErrorId | Should -Be 'BackupCopyUnsafe,OdaKvmBackup.Commands.RestoreKvmBackupCommand'
        (Invoke-Virsh @('domstate', "$Vm-$Name") -AllowFailure).ExitCode | Should -Not -Be 0
        @(Get-ChildItem -LiteralPath $folder -Force).Count | Should -Be 0
    }

    It 'leaves the host files as they were and never ran the set''s emulator' {
        (Get-FileHash -LiteralPath $Sentinel -Algorithm SHA256).Hash | Should -Be $SentinelHash
        Test-Path -LiteralPath $EvilMarker | Should -BeFalse
    }
}

Describe 'The boot test''s scratch folder' {
    It 'holds the overlays and the console log in ODAKVMBACKUP_BOOT_TEST_DIR while the VM runs, and nothing afterwards' {
        $scratch = New-TestFolder forged-scratch
        $script:SeenThere = @()
        $run = Invoke-BoundedBootTest -Set $RealSet -Environment @{ ODAKVMBACKUP_BOOT_TEST_DIR = $scratch } -WhileRunning {
            param($domain)
            if ($domain) { $script:SeenThere += @(Get-ChildItem -LiteralPath $scratch -Recurse -File -ErrorAction SilentlyContinue | ForEach-Object Name) }
        }
        $run.TimedOut | Should -BeFalse
        $run.Result.Passed | Should -BeTrue -Because ($run.Result.Problems -join ' ')
        $SeenThere | Should -Contain 'linux_boot.boottest.qcow2'
        $SeenThere | Should -Contain 'disco_secundario.boottest.qcow2'
        @($SeenThere | Where-Object { $_ -like '*.log' }).Count | Should -BeGreaterThan 0
        @(Get-ChildItem -LiteralPath $scratch -Force).Count | Should -Be 0
        Get-BootTestLeftovers | Should -BeNullOrEmpty
    }

    It 'is checked for room before anything is created: a 16 MiB file system is refused with NotEnoughSpaceForBootTest' {
        $small = New-TestFolder forged-small
        & mount -t tmpfs -o size=16m tmpfs $small
        if ($LASTEXITCODE) { throw "cannot mount a tmpfs at $small" }
        try {
            $script:SawDomain = $false
            $run = Invoke-BoundedBootTest -Set $RealSet -BootTimeoutSec 30 -BoundSec 180 -Environment @{ ODAKVMBACKUP_BOOT_TEST_DIR = $small } -WhileRunning {
                param($domain)
                if ($domain) { $script:SawDomain = $true }
            }
            $run.TimedOut | Should -BeFalse
            $run.Result.Passed | Should -BeFalse
            $run.Result.Errors.Id | Should -Contain 'NotEnoughSpaceForBootTest,OdaKvmBackup.Commands.TestKvmBackupCommand'
            ($run.Result.Problems -join ' ') | Should -Match ([regex]::Escape($small))
            $SawDomain | Should -BeFalse
            @(Get-ChildItem -LiteralPath $small -Force).Count | Should -Be 0
            Get-BootTestLeftovers | Should -BeNullOrEmpty
        }
        finally { & umount $small }
    }
}
