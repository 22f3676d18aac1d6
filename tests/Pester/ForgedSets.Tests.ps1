# Forged backup sets (issue 13: manifests and names, containment, time and identity from the store's layout,
# restore size checks). A backup server is less protected than the host it serves, so each test plays its attacker:
# New-ForgedSet (ForgedSetHelpers.ps1) copies one real set of the lab VM lab_forged and tampers with it, digests
# recomputed. What is asserted is what a user would notice: nothing written outside the restore or state folders, a
# host file left as it was, each bad set named as unreadable with its reason while the good sets beside it are still
# listed, tested and pruned, and the real newest set never removed. Only VMs named lab_forged* are made; they go at
# the end.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    . (Join-Path $PSScriptRoot 'ForgedSetHelpers.ps1')
    Import-Module (Join-Path $RepoRoot 'tests/Lab/OdaKvmSshLab.psm1') -Force
    $script:Vm = 'lab_forged'
    Initialize-Lab -VmName $Vm   # fresh disks, started, agent answering; throws (failing every test) when the lab cannot start
    $script:Sshd = Start-LabSshd  # the SSH server is this machine: a folder it serves is also a local folder

    $script:Backup = New-TestFolder forged-backup
    $objects = Get-VmDisk $Vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination $Backup | Invoke-BlockCommit |
        Move-OverlayToRetention -Path (New-TestFolder forged-retention)
    $script:RealRunId = $objects[0].RunId
    $script:RealSet = Join-Path $Backup "$Vm/$RealRunId"
    if ((Get-Content -Raw (Join-Path $RealSet 'backup.json') | ConvertFrom-Json).Status -ne 'Complete') { throw "The real set $RealSet is not Complete." }

    function Get-DomainNames { @((Invoke-Virsh @('list', '--all', '--name')).StdOut -split "`n" | ForEach-Object Trim | Where-Object { $_ }) }
    function ConvertFrom-RunId([string] $RunId) { [datetime]::ParseExact($RunId, 'yyyyMMdd-HHmmss', $null, 'AssumeUniversal,AdjustToUniversal') }
    # A run id some days before the real set's.
    function Get-EarlierRunId([int] $Days) { (ConvertFrom-RunId $RealRunId).AddDays(-$Days).ToString('yyyyMMdd-HHmmss') }
    # A sound copy of the real set under another run id (and VM folder), its manifest agreeing with its folders.
    function New-GoodSet([string] $Destination, [string] $RunId, [string] $DomainName = $script:Vm) {
        $started = (ConvertFrom-RunId $RunId).ToString('o')
        New-ForgedSet -From $RealSet -Destination $Destination -DomainName $DomainName -RunId $RunId -Tamper { param($Folder, $Manifest) $Manifest.StartedUtc = $started }.GetNewClosure()
    }
    function Get-RunFolders([string] $Destination, [string] $DomainName = $script:Vm) {
        @(Get-ChildItem -LiteralPath (Join-Path $Destination $DomainName) -Directory | ForEach-Object Name | Sort-Object)
    }
    # The disk of the forged set to tamper with: the raw data disk.
    function Get-DataDisk($Manifest) { @($Manifest.Disks | Where-Object Target -eq 'vdb')[0] }
    # A host file that must never change: a key file, as an attacker would aim at /root/.ssh/authorized_keys.
    function New-VictimFile {
        $path = Join-Path (New-TestFolder forged-victim) 'authorized_keys'
        Set-Content -LiteralPath $path -Value "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostOwnKey$([guid]::NewGuid().ToString('N')) root@oda"
        $path
    }
    # A forged set whose vdb File is the absolute path of a host file; its data sits under that path inside the set
    # folder, where an attacker who controls the server would put it.
    function New-AbsoluteFileSet([string] $Destination, [string] $Victim) {
        New-ForgedSet -From $RealSet -Destination $Destination -Tamper {
            param($Folder, $Manifest)
            $disk = @($Manifest.Disks | Where-Object Target -eq 'vdb')[0]
            $planted = "$Folder$Victim"
            New-Item -ItemType Directory -Force -Path (Split-Path $planted) | Out-Null
            & cp --sparse=always (Join-Path $Folder $disk.File) $planted
            $disk.File = $Victim
        }.GetNewClosure()
    }
}

AfterAll {
    foreach ($name in @(Get-DomainNames | Where-Object { $_ -like 'lab_forged*' })) {
        Invoke-Virsh @('destroy', $name) -AllowFailure | Out-Null
        Invoke-Virsh @('undefine', $name, '--snapshots-metadata') -AllowFailure | Out-Null
    }
    foreach ($disk in 'boot', 'data') { Remove-Item -LiteralPath (Split-Path (Get-LabDiskPath -Name $Vm -Disk $disk)) -Recurse -Force -ErrorAction SilentlyContinue }
}

Describe 'A restore from a forged set writes nothing outside its folder' {
    It "refuses a File of '../x' restored with -Destination: nothing is written in the folder or beside it" {
        $store = New-TestFolder forged-dotdot
        $set = New-ForgedSet -From $RealSet -Destination $store -Tamper {
            param($Folder, $Manifest)
            $disk = Get-DataDisk $Manifest
            & cp --sparse=always (Join-Path $Folder $disk.File) (Join-Path $Folder '../x')
            $disk.File = '../x'
        }
        $parent = New-TestFolder forged-restore-parent
        $restore = Join-Path $parent 'restore'
        New-Item -ItemType Directory -Path $restore | Out-Null

        Restore-KvmBackup -Path $set -Destination $restore -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty

        Get-TreeState $parent | Should -BeNullOrEmpty -Because 'nothing may be written in the restore folder nor beside it'
        Test-Path -LiteralPath (Join-Path $parent 'x') | Should -BeFalse
        @($errs).Count | Should -Be 1
        $errs[0].FullyQualifiedErrorId | Should -Be 'BackupSetUnreadable,OdaKvmBackup.Commands.RestoreKvmBackupCommand'
        "$($errs[0])" | Should -Match ([regex]::Escape("'../x'"))
        "$($errs[0])" | Should -Match ([regex]::Escape($set))
    }

    It 'never touches a host file named by an absolute File, even with -Force: same content, nothing kept aside beside it' {
        $victim = New-VictimFile
        $hash = (Get-FileHash -LiteralPath $victim -Algorithm SHA256).Hash
        $set = New-AbsoluteFileSet -Destination (New-TestFolder forged-absolute) -Victim $victim
        $restore = New-TestFolder forged-absolute-restore

        Restore-KvmBackup -Path $set -Destination $restore -Force -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty

        (Get-FileHash -LiteralPath $victim -Algorithm SHA256).Hash | Should -Be $hash
        @(Get-ChildItem -LiteralPath (Split-Path $victim) -Force | ForEach-Object Name) | Should -Be @('authorized_keys') -Because 'no .before-restore-* may appear beside the host file'
        Get-TreeState $restore | Should -BeNullOrEmpty
        $errs[0].FullyQualifiedErrorId | Should -Be 'BackupSetUnreadable,OdaKvmBackup.Commands.RestoreKvmBackupCommand'
        "$($errs[0])" | Should -Match ([regex]::Escape("'$victim'"))
    }

    It 'refuses a copy larger than its manifest says before writing anything, naming the disk and both sizes' {
        # The digests are those of the real copy; the copy in the store has grown by 1 MiB.
        $store = New-TestFolder forged-grown
        $set = New-ForgedSet -From $RealSet -Destination $store
        $copy = Join-Path $set 'disco_secundario'
        $size = (Get-Item -LiteralPath $copy).Length
        & truncate -s ($size + 1MB) $copy
        $restore = New-TestFolder forged-grown-restore

        Restore-KvmBackup -Path $set -Destination $restore -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty

        Get-TreeState $restore | Should -BeNullOrEmpty
        $errs[0].FullyQualifiedErrorId | Should -Be 'BackupCopyDamaged,OdaKvmBackup.Commands.RestoreKvmBackupCommand'
        "$($errs[0])" | Should -Match 'vdb'
        "$($errs[0])" | Should -Match "$($size + 1MB) bytes"
        "$($errs[0])" | Should -Match "backup\.json says $size\b"
    }

    It 'refuses a restore into a folder with less free space than the copies need, before writing anything' {
        $need = (Get-KvmBackup -Path $Backup -DomainName $Vm).DataBytes
        $small = New-TestFolder forged-small
        $size = [math]::Max(64KB, [long][math]::Floor($need / 2 / 4096) * 4096)
        & mount -t tmpfs -o "size=$size" tmpfs $small
        if ($LASTEXITCODE) { throw "Cannot mount a tmpfs at $small" }
        try {
            Restore-KvmBackup -Path $RealSet -Destination $small -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
            @(Get-ChildItem -LiteralPath $small -Force).Count | Should -Be 0
            $errs[0].FullyQualifiedErrorId | Should -Be 'NotEnoughSpaceAtDestination,OdaKvmBackup.Commands.RestoreKvmBackupCommand'
            "$($errs[0])" | Should -Match ([regex]::Escape($small))
            "$($errs[0])" | Should -Match "needs $need bytes"
        }
        finally { & umount $small }
    }
}

Describe 'Unreadable sets are named with their reason; the good sets beside them are listed, tested and pruned' {
    BeforeAll {
        $script:Mixed = New-TestFolder forged-mixed
        $script:OlderRunId = Get-EarlierRunId 2
        New-GoodSet $Mixed $OlderRunId | Out-Null
        New-GoodSet $Mixed $RealRunId | Out-Null
        $script:Bad = [ordered]@{}
        $Bad['"Disks": null'] = @{
            Folder = New-ForgedSet -From $RealSet -Destination $Mixed -RunId (Get-EarlierRunId 5) -Tamper { param($Folder, $Manifest) $Manifest.Disks = $null }
            Reason = 'Disks'
        }
        $Bad["a File of '..'"] = @{
            Folder = New-ForgedSet -From $RealSet -Destination $Mixed -RunId (Get-EarlierRunId 6) -Tamper { param($Folder, $Manifest) (Get-DataDisk $Manifest).File = '..' }
            Reason = [regex]::Escape("'..'")
        }
        # Two more folders holding the real set's manifest as it is (its RunId is the real set's folder, not theirs).
        $real = $RealRunId
        foreach ($days in 7, 8) {
            $Bad["the manifest of $RealRunId in the folder of $days days before"] = @{
                Folder = New-ForgedSet -From $RealSet -Destination $Mixed -RunId (Get-EarlierRunId $days) -Tamper { param($Folder, $Manifest) $Manifest.RunId = $real }.GetNewClosure()
                Reason = [regex]::Escape("RunId '$RealRunId'")
            }
        }
        # Each bad set must be named by exactly one of the errors, with its folder and its reason.
        function Assert-EachBadSetNamed($Errors, [string] $Cmdlet) {
            @($Errors).Count | Should -Be $Bad.Count
            foreach ($e in $Errors) { $e.FullyQualifiedErrorId | Should -Be "BackupSetUnreadable,OdaKvmBackup.Commands.$Cmdlet" }
            foreach ($case in $Bad.GetEnumerator()) {
                $named = @($Errors | Where-Object { "$_" -match [regex]::Escape($case.Value.Folder) })
                $named.Count | Should -Be 1 -Because "$($case.Key) ($($case.Value.Folder)) is named once"
                "$($named[0])" | Should -Match $case.Value.Reason -Because "the error says why $($case.Key) cannot be trusted"
            }
        }
    }

    It 'Get-KvmBackup lists the two good sets and names each bad one as unreadable with its reason' {
        $sets = @(Get-KvmBackup -Path $Mixed -ErrorVariable errs -ErrorAction SilentlyContinue)
        ($sets.RunId | Sort-Object) -join ',' | Should -Be "$OlderRunId,$RealRunId"
        Assert-EachBadSetNamed $errs 'GetKvmBackupCommand'
    }

    It 'Test-KvmBackup -Path of the destination tests the two good sets (passed) and names each bad one' {
        $results = @(Test-KvmBackup -Path $Mixed -ErrorVariable errs -ErrorAction SilentlyContinue)
        ($results.RunId | Sort-Object) -join ',' | Should -Be "$OlderRunId,$RealRunId"
        $results.Passed | Should -Not -Contain $false
        Assert-EachBadSetNamed $errs 'TestKvmBackupCommand'
    }

    It 'Remove-KvmBackup -KeepLast 1 removes the older good set and leaves every bad one alone, with a warning that names it' {
        $removed = @(Remove-KvmBackup -Path $Mixed -KeepLast 1 -Confirm:$false -PassThru -WarningVariable warnings -WarningAction SilentlyContinue -ErrorVariable errs -ErrorAction SilentlyContinue)
        $removed.RunId | Should -Be $OlderRunId
        @($errs).Count | Should -Be 0
        $left = @($Bad.Values | ForEach-Object { Split-Path -Leaf $_.Folder }) + $RealRunId
        (Get-RunFolders $Mixed) -join ',' | Should -Be (($left | Sort-Object) -join ',')
        foreach ($case in $Bad.Values) { @($warnings | Where-Object { "$_" -match [regex]::Escape($case.Folder) -and "$_" -match $case.Reason }).Count | Should -Be 1 }
    }

    It 'a set whose DomainName is not the folder it sits in is unreadable, and cannot be restored' {
        $store = New-TestFolder forged-domain
        New-GoodSet $store $OlderRunId | Out-Null
        $set = New-ForgedSet -From $RealSet -Destination $store -Tamper { param($Folder, $Manifest) $Manifest.DomainName = 'linux_vm' }
        $sets = @(Get-KvmBackup -Path $store -ErrorVariable errs -ErrorAction SilentlyContinue)
        $sets.RunId | Should -Be $OlderRunId
        $errs[0].FullyQualifiedErrorId | Should -Be 'BackupSetUnreadable,OdaKvmBackup.Commands.GetKvmBackupCommand'
        "$($errs[0])" | Should -Match "DomainName 'linux_vm'"
        "$($errs[0])" | Should -Match ([regex]::Escape($set))
        $restore = New-TestFolder forged-domain-restore
        Restore-KvmBackup -Path $set -Destination $restore -ErrorVariable rerrs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $rerrs[0].FullyQualifiedErrorId | Should -Be 'BackupSetUnreadable,OdaKvmBackup.Commands.RestoreKvmBackupCommand'
        Get-TreeState $restore | Should -BeNullOrEmpty
    }
}

Describe 'Pruning goes by the folders and their run ids; a set dated in the future stops pruning of its VM' {
    BeforeAll {
        $script:Pool = New-TestFolder forged-prune
        $script:Other = 'lab_forged_b'
        $script:Runs = @((Get-EarlierRunId 3), (Get-EarlierRunId 1), $RealRunId)
        foreach ($run in $Runs) { New-GoodSet $Pool $run | Out-Null }
        foreach ($run in (Get-EarlierRunId 2), (Get-EarlierRunId 1)) { New-GoodSet $Pool $run $Other | Out-Null }
        $script:Future = '20990101-000000'
        New-ForgedSet -From $RealSet -Destination $Pool -RunId $Future -Tamper {
            param($Folder, $Manifest)
            $Manifest.StartedUtc = '2099-01-01T00:00:00Z'
            $Manifest.CompletedUtc = '2099-01-01T00:05:00Z'
        } | Out-Null
    }

    It 'Remove-KvmBackup -KeepLast 1 removes nothing of that VM, names the forged set in an error, and still prunes the other VM' {
        $removed = @(Remove-KvmBackup -Path $Pool -KeepLast 1 -Confirm:$false -PassThru -ErrorVariable errs -ErrorAction SilentlyContinue)
        (Get-RunFolders $Pool) -join ',' | Should -Be ((@($Runs) + $Future | Sort-Object) -join ',')
        @($removed | ForEach-Object { "$($_.DomainName)/$($_.RunId)" }) | Should -Be @("$Other/$(Get-EarlierRunId 2)")
        (Get-RunFolders $Pool $Other) -join ',' | Should -Be (Get-EarlierRunId 1)
        @($errs).Count | Should -Be 1
        $errs[0].FullyQualifiedErrorId | Should -Be 'BackupSetOutOfOrder,OdaKvmBackup.Commands.RemoveKvmBackupCommand'
        "$($errs[0])" | Should -Match ([regex]::Escape("$Pool/$Vm/$Future"))
        "$($errs[0])" | Should -Match 'future'
    }

    It 'refuses to remove the real newest set piped in by name while a set dated in the future sits beside it' {
        Get-KvmBackup -Path $Pool -DomainName $Vm | Where-Object RunId -eq $RealRunId | Remove-KvmBackup -Confirm:$false -ErrorVariable errs -ErrorAction SilentlyContinue
        Get-RunFolders $Pool | Should -Contain $RealRunId
        $errs[0].FullyQualifiedErrorId | Should -Be 'BackupSetOutOfOrder,OdaKvmBackup.Commands.RemoveKvmBackupCommand'
        "$($errs[0])" | Should -Match ([regex]::Escape($Future))
    }

    It 'Get-KvmBackup -Latest (what the nightly -TestLatest tests) skips the set dated in the future, with a warning that names it' {
        $latest = @(Get-KvmBackup -Path $Pool -DomainName $Vm -Latest -WarningVariable warns -WarningAction SilentlyContinue)
        $latest.RunId | Should -Be $RealRunId
        @($warns).Count | Should -Be 1
        "$($warns[0])" | Should -Match ([regex]::Escape("$Pool/$Vm/$Future"))
        "$($warns[0])" | Should -Match 'future'
    }

    It 'Get-KvmBackup -Latest and the listing order go by the run id, not by the time a manifest claims' {
        $store = New-TestFolder forged-order
        $older = Get-EarlierRunId 2
        $newer = Get-EarlierRunId 1
        New-GoodSet $store $newer | Out-Null
        # The older folder claims to have been made after the newer one.
        New-ForgedSet -From $RealSet -Destination $store -RunId $older -Tamper { param($Folder, $Manifest) $Manifest.StartedUtc = (ConvertFrom-RunId $RealRunId).ToString('o') } | Out-Null
        (Get-KvmBackup -Path $store -Latest).RunId | Should -Be $newer
        @(Get-KvmBackup -Path $store).RunId -join ',' | Should -Be "$older,$newer"
        # Its time disagrees with its run id: pruning of that VM stops, naming it.
        Remove-KvmBackup -Path $store -KeepLast 1 -Confirm:$false -ErrorVariable errs -ErrorAction SilentlyContinue
        (Get-RunFolders $store) -join ',' | Should -Be "$older,$newer"
        $errs[0].FullyQualifiedErrorId | Should -Be 'BackupSetOutOfOrder,OdaKvmBackup.Commands.RemoveKvmBackupCommand'
        "$($errs[0])" | Should -Match ([regex]::Escape("$store/$Vm/$older"))
    }
}

Describe 'A forged DomainName cannot walk the boot test out of the state folder' {
    It 'Test-KvmBackup -Boot of a set whose DomainName climbs out with ../ creates nothing outside, starts no VM, and names the set' {
        # From the boot tests' folder (<state>/boot-tests) up and into a folder of the scratch space: a short name,
        # so that nothing else (a file name too long) stops the boot test before it makes its folder.
        $escape = Join-Path $env:ODAKVM_TEST_SCRATCH "forged-escape-$([guid]::NewGuid().ToString('N').Substring(0, 8))"
        $climb = [IO.Path]::GetRelativePath((Join-Path $env:ODAKVMBACKUP_STATE_DIR 'boot-tests'), $escape) + '/vm'
        $climb | Should -Match '^\.\./'
        $set = New-ForgedSet -From $RealSet -Destination (New-TestFolder forged-boot) -Tamper { param($Folder, $Manifest) $Manifest.DomainName = $climb }.GetNewClosure()
        $domainsBefore = @(Get-DomainNames)

        $results = @(Test-KvmBackup -Path $set -Boot -BootTimeoutSec 30 -ErrorVariable errs -ErrorAction SilentlyContinue)

        Test-Path -LiteralPath $escape | Should -BeFalse -Because 'the boot test may create folders only inside the state folder'
        @(Get-DomainNames) | Should -Be $domainsBefore
        $results | Should -BeNullOrEmpty
        $errs[0].FullyQualifiedErrorId | Should -Be 'BackupSetUnreadable,OdaKvmBackup.Commands.TestKvmBackupCommand'
        "$($errs[0])" | Should -Match ([regex]::Escape("DomainName '$climb'"))
    }
}

Describe 'The same forged sets on an SSH server' {
    It 'lists the good set and names each bad one as unreadable: one bad set never stops the listing' {
        $remote = New-TestFolder forged-ssh-list
        New-GoodSet $remote $RealRunId | Out-Null
        $nullDisks = New-ForgedSet -From $RealSet -Destination $remote -RunId (Get-EarlierRunId 1) -Tamper { param($Folder, $Manifest) $Manifest.Disks = $null }
        $dotdot = New-ForgedSet -From $RealSet -Destination $remote -RunId (Get-EarlierRunId 2) -Tamper { param($Folder, $Manifest) (Get-DataDisk $Manifest).File = '..' }

        $sets = @(Get-KvmBackup -Path "odakvm-backup:$remote" -ErrorVariable errs -ErrorAction SilentlyContinue)

        $sets.RunId | Should -Be $RealRunId
        @($errs).Count | Should -Be 2
        foreach ($e in $errs) { $e.FullyQualifiedErrorId | Should -Be 'BackupSetUnreadable,OdaKvmBackup.Commands.GetKvmBackupCommand' }
        @($errs | Where-Object { "$_" -match [regex]::Escape($nullDisks) -and "$_" -match 'Disks' }).Count | Should -Be 1
        @($errs | Where-Object { "$_" -match [regex]::Escape($dotdot) -and "$_" -match [regex]::Escape("'..'") }).Count | Should -Be 1
    }

    It 'never touches a host file named by an absolute File of a set on the server, even with -Force' {
        $victim = New-VictimFile
        $hash = (Get-FileHash -LiteralPath $victim -Algorithm SHA256).Hash
        $remote = New-TestFolder forged-ssh-absolute
        $set = New-AbsoluteFileSet -Destination $remote -Victim $victim
        $restore = New-TestFolder forged-ssh-absolute-restore

        Restore-KvmBackup -Path "odakvm-backup:$set" -Destination $restore -Force -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty

        (Get-FileHash -LiteralPath $victim -Algorithm SHA256).Hash | Should -Be $hash
        @(Get-ChildItem -LiteralPath (Split-Path $victim) -Force | ForEach-Object Name) | Should -Be @('authorized_keys')
        Get-TreeState $restore | Should -BeNullOrEmpty
        $errs[0].FullyQualifiedErrorId | Should -Be 'BackupSetUnreadable,OdaKvmBackup.Commands.RestoreKvmBackupCommand'
        "$($errs[0])" | Should -Match ([regex]::Escape("'$victim'"))
    }

    It 'Remove-KvmBackup -KeepLast 1 of a server holding a set dated 2099 removes nothing of that VM and names the forged set' {
        $remote = New-TestFolder forged-ssh-prune
        $older = Get-EarlierRunId 1
        New-GoodSet $remote $older | Out-Null
        New-GoodSet $remote $RealRunId | Out-Null
        New-ForgedSet -From $RealSet -Destination $remote -RunId '20990101-000000' -Tamper { param($Folder, $Manifest) $Manifest.StartedUtc = '2099-01-01T00:00:00Z' } | Out-Null

        Remove-KvmBackup -Path "odakvm-backup:$remote" -KeepLast 1 -Confirm:$false -ErrorVariable errs -ErrorAction SilentlyContinue

        (Get-RunFolders $remote) -join ',' | Should -Be "$older,$RealRunId,20990101-000000"
        $errs[0].FullyQualifiedErrorId | Should -Be 'BackupSetOutOfOrder,OdaKvmBackup.Commands.RemoveKvmBackupCommand'
        "$($errs[0])" | Should -Match '20990101-000000'
    }
}
