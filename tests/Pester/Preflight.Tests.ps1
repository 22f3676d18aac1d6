# Preflight and bad input (issue: a backup never leaves a VM on its overlays): every problem a user can cause
# gets an error that names the cause and the fix, and changes nothing.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Vm = 'linux_vm'
    Initialize-Lab -VmName $Vm
    Reset-LabVmIfNeeded $Vm
    $script:InputLog = Join-Path $RepoRoot 'out/bad-input-results.txt'
    New-Item -ItemType Directory -Force -Path (Split-Path $InputLog) | Out-Null
    $script:Journal = (Join-Path $env:ODAKVMBACKUP_STATE_DIR "journal/d-$Vm.json")

    function Get-VmSnapshotState([string] $Domain = $Vm) {
        [pscustomobject]@{
            Inactive = (Invoke-Virsh @('dumpxml', $Domain, '--inactive')).StdOut
            Files = @((Get-LabDiskMap $Domain).Values | ForEach-Object { Get-ChildItem -LiteralPath (Split-Path $_) -Force } | ForEach-Object FullName | Sort-Object)
            Snapshots = @(Get-SnapshotNames $Domain)
        }
    }

    # Runs the whole pipeline with the given parameters; returns its errors (terminating or not). The virsh
    # commands New-KvmDiskSnapshot ran are kept in $script:Ran, so a test can tell "refused" from "snapshot taken,
    # then rolled back".
    function Invoke-BackupPipeline([hashtable] $Snapshot = @{}, [hashtable] $Copy, [hashtable] $Retain, [string[]] $Names = @($Vm)) {
        $errors = @()
        $script:Ran = [System.Collections.Generic.List[string]]::new()
        try {
            $null = $Names | Get-VmDisk -ErrorVariable +errors -ErrorAction SilentlyContinue |
                New-KvmDiskSnapshot @Snapshot -Verbose -ErrorVariable +errors -ErrorAction SilentlyContinue 4>&1 |
                Where-Object { if ($_ -is [System.Management.Automation.VerboseRecord]) { $script:Ran.Add($_.Message); $false } else { $true } } |
                Copy-VmDisk @Copy -ErrorVariable +errors -ErrorAction SilentlyContinue |
                Invoke-BlockCommit -ErrorVariable +errors -ErrorAction SilentlyContinue |
                Move-OverlayToRetention @Retain -ErrorVariable +errors -ErrorAction SilentlyContinue
        }
        catch { $errors += $_ }
        @($errors | Where-Object { $_ -is [System.Management.Automation.ErrorRecord] })
    }

    # The case's error must be there, name the cause and the fix, and nothing about the VM may have changed.
    function Assert-Refused([string] $Case, $Errors, [string] $ErrorId, [string] $FixPattern, $Before, [string] $Domain = $Vm) {
        Add-Content -Path $InputLog -Value ("{0} | {1} | {2}" -f $Case, ($Errors.FullyQualifiedErrorId -join ', '), (($Errors | ForEach-Object { $_.ToString() }) -join ' / '))
        ($Errors.FullyQualifiedErrorId | ForEach-Object { ($_ -split ',')[0] }) | Should -Contain $ErrorId
        $mine = $Errors | Where-Object { ($_.FullyQualifiedErrorId -split ',')[0] -eq $ErrorId } | Select-Object -First 1
        $mine.ToString() | Should -Match $FixPattern
        if ($Before) {
            # Refused before any snapshot, not snapshotted and then put back.
            @($script:Ran | Where-Object { $_ -like 'Running: virsh snapshot-create-as*' }) | Should -BeNullOrEmpty
            $after = Get-VmSnapshotState $Domain
            $after.Inactive | Should -Be $Before.Inactive
            $after.Files | Should -Be $Before.Files
            $after.Snapshots | Should -Be $Before.Snapshots
            Test-OnOwnDisks $Domain | Should -BeTrue
            Test-Path (Join-Path $env:ODAKVMBACKUP_STATE_DIR "journal/d-$Domain.json") | Should -BeFalse
        }
    }
}

Describe 'Bad domain names' {
    It 'rejects an empty or blank name: <Name>' -ForEach @(@{ Name = '' }, @{ Name = '   ' }) {
        Get-VmDisk $Name -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Assert-Refused "Get-VmDisk '$Name'" $errs 'InvalidDomainName' 'virsh list --all' $null
    }

    It 'reports <Name> as an unknown domain, passed to virsh as plain text' -ForEach @(
        @{ Name = 'no_such_vm' }, @{ Name = 'vm with spaces' }, @{ Name = "it's" }, @{ Name = 'a;b' },
        @{ Name = '$(touch /tmp/odakvm-pwned)' }, @{ Name = '-linux_vm' }, @{ Name = '"quoted"' }
    ) {
        $before = Get-VmSnapshotState
        $errs = Invoke-BackupPipeline -Names $Name -Copy @{ Destination = (New-TestFolder dest) } -Retain @{ Path = (New-TestFolder ret) }
        Assert-Refused "Get-VmDisk '$Name'" $errs 'DomainNotFound' "no domain named '.*'.*virsh list --all" $before
        Test-Path /tmp/odakvm-pwned | Should -BeFalse
    }

    It 'rejects a blank name given to Repair-KvmBackup' {
        Repair-KvmBackup -DomainName ' ' -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        Assert-Refused "Repair-KvmBackup ' '" $errs 'InvalidDomainName' 'virsh list --all' $null
    }

    It 'rejects a snapshot name that cannot be part of a file name: <Name>' -ForEach @(@{ Name = 'a/b' }, @{ Name = '-x' }, @{ Name = '.hidden' }, @{ Name = 'a,b' }) {
        $before = Get-VmSnapshotState
        $errs = Invoke-BackupPipeline -Snapshot @{ SnapshotName = $Name } -Copy @{ Destination = (New-TestFolder dest) } -Retain @{ Path = (New-TestFolder ret) }
        Assert-Refused "New-KvmDiskSnapshot -SnapshotName '$Name'" $errs 'InvalidSnapshotName' 'Use letters' $before
    }
}

Describe 'Bad paths' {
    AfterEach { Assert-GuestTicks $Vm }
    BeforeAll {
        $script:ro = New-TestFolder read-only
        & mount -t tmpfs -o ro,size=1m tmpfs $ro
        if ($LASTEXITCODE) { throw "cannot mount a read-only tmpfs at $ro" }
        $script:tiny = New-TestFolder tiny
        & mount -t tmpfs -o size=10m tmpfs $tiny
        if ($LASTEXITCODE) { throw "cannot mount a tmpfs at $tiny" }
        $script:full = New-TestFolder full
        & mount -t tmpfs -o size=2m tmpfs $full
        if ($LASTEXITCODE) { throw "cannot mount a tmpfs at $full" }
        & fallocate -l ([IO.DriveInfo]::new($full).AvailableFreeSpace - 64KB) (Join-Path $full 'filler')
        $script:bootFolder = Split-Path (Get-LabDiskPath -Name $Vm -Disk boot)
    }
    AfterAll { & umount $ro; & umount $tiny; & umount $full }

    It 'refuses <Case>' -ForEach @(
        @{ Case = 'an empty -Destination'; Copy = { @{ Destination = '' } }; Id = 'PathNotFound'; Fix = 'Name an existing folder' }
        @{ Case = 'a -Destination that does not exist'; Copy = { @{ Destination = (Join-Path $env:ODAKVM_TEST_SCRATCH 'does/not/exist') } }; Id = 'PathNotFound'; Fix = 'mkdir -p' }
        @{ Case = 'a -Destination on a read-only file system'; Copy = { @{ Destination = $ro } }; Id = 'PathNotWritable'; Fix = 'read-only' }
        @{ Case = 'a -Destination that is the folder of a disk'; Copy = { @{ Destination = $bootFolder } }; Id = 'DestinationInsideDiskFolder'; Fix = 'another folder' }
        @{ Case = 'a -Destination inside the folder of a disk'; Copy = { @{ Destination = (New-Item -ItemType Directory -Force (Join-Path $bootFolder 'inside')).FullName } }; Id = 'DestinationInsideDiskFolder'; Fix = 'another folder' }
        @{ Case = 'a -Destination with no room left'; Copy = { @{ Destination = $full } }; Id = 'NotEnoughSpaceAtDestination'; Fix = 'another -Destination' }
        @{ Case = 'a retention -Path that is the folder of a disk'; Retain = { @{ Path = $bootFolder } }; Id = 'RetentionIsDiskFolder'; Fix = 'another -Path' }
        @{ Case = 'a retention -Path that does not exist'; Retain = { @{ Path = (Join-Path $env:ODAKVM_TEST_SCRATCH 'no/retention') } }; Id = 'PathNotFound'; Fix = 'mkdir -p' }
        @{ Case = 'an -OverlayDirectory that does not exist'; Snapshot = { @{ OverlayDirectory = (Join-Path $env:ODAKVM_TEST_SCRATCH 'no/overlays') } }; Id = 'PathNotFound'; Fix = 'mkdir -p' }
        @{ Case = 'an -OverlayDirectory without room for the overlays'; Snapshot = { @{ OverlayDirectory = $tiny } }; Id = 'NotEnoughSpaceForOverlays'; Fix = '-OverlayDirectory' }
    ) {
        $params = $_   # not every case names every stage's parameters
        $copy = if ($params['Copy']) { & $params['Copy'] } else { @{ Destination = (New-TestFolder dest) } }
        $retain = if ($params['Retain']) { & $params['Retain'] } else { @{ Path = (New-TestFolder ret) } }
        $snapshot = if ($params['Snapshot']) { & $params['Snapshot'] } else { @{} }
        $before = Get-VmSnapshotState   # after the cases have made their folders
        $errs = Invoke-BackupPipeline -Snapshot $snapshot -Copy $copy -Retain $retain
        Assert-Refused $Case $errs $Id $Fix $before
        if (Test-Path (Join-Path $bootFolder 'inside')) { Remove-Item (Join-Path $bootFolder 'inside') }
    }

    It 'backs up into folders whose names hold spaces, quotes, ";", "$(...)" and a leading "-"' {
        $base = New-TestFolder odd
        $destination = New-Item -ItemType Directory -Path (Join-Path $base "-dest it's; `$(touch pwned) `"q`"")
        $retention = New-Item -ItemType Directory -Path (Join-Path $base "-ret ; `$(id)")
        # The process's own working folder too, not only PowerShell's: a command line run by a shell (ours or one
        # a native tool starts) would run "touch pwned" there.
        Push-Location $base
        $processFolder = [Environment]::CurrentDirectory
        [Environment]::CurrentDirectory = $base
        try {
            $objects = Get-VmDisk $Vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination "./$($destination.Name)" | Invoke-BlockCommit | Move-OverlayToRetention -Path $retention.FullName
        }
        finally {
            [Environment]::CurrentDirectory = $processFolder
            Pop-Location
        }
        @($objects).Count | Should -Be 2
        (Get-Content -Raw (Join-Path $objects[0].BackupSet 'backup.json') | ConvertFrom-Json).Status | Should -Be 'Complete'
        $objects[0].BackupSet | Should -BeLike "$($destination.FullName)/*"
        Test-Path (Join-Path $base 'pwned') | Should -BeFalse
        Test-OnOwnDisks $Vm | Should -BeTrue
    }

    It 'never overwrites an existing backup set without -Force' {
        $destination = New-TestFolder force
        $retention = New-TestFolder force-ret
        $errs = @()
        try {
            $null = Get-VmDisk $Vm | New-KvmDiskSnapshot |
                ForEach-Object { $set = Join-Path $destination "$($_.DomainName)/$($_.RunId)"; New-Item -ItemType Directory -Force $set | Out-Null; Set-Content (Join-Path $set 'older.txt') 'keep me'; $_ } |
                Copy-VmDisk -Destination $destination | Invoke-BlockCommit | Move-OverlayToRetention -Path $retention
        }
        catch { $errs += $_ }
        Assert-Refused 'a backup set that already exists' $errs 'BackupSetExists' '-Force' $null
        Get-ChildItem -Recurse -Filter older.txt $destination | Get-Content | Should -Be 'keep me'
        Test-OnOwnDisks $Vm | Should -BeTrue
        Get-StrayDiskFolderFiles $Vm | Should -BeNullOrEmpty
        # Run ids have a resolution of one second: the next run may get the same one, whose folder must then be the
        # empty one made below, not the one above (CI at f45cebf found older.txt kept aside).
        Remove-Item -Recurse -Force (Join-Path $destination '*')

        $objects = Get-VmDisk $Vm | New-KvmDiskSnapshot |
            ForEach-Object { New-Item -ItemType Directory -Force (Join-Path $destination "$($_.DomainName)/$($_.RunId)") | Out-Null; $_ } |
            Copy-VmDisk -Destination $destination -Force | Invoke-BlockCommit | Move-OverlayToRetention -Path $retention
        (Get-Content -Raw (Join-Path $objects[0].BackupSet 'backup.json') | ConvertFrom-Json).Status | Should -Be 'Complete'
        # Even -Force deletes nothing: the older set is kept aside.
        $kept = @(Get-ChildItem -Directory (Join-Path $destination $Vm) | Where-Object Name -like "$($objects[0].RunId).replaced-*")
        $kept.Count | Should -Be 1
        Get-ChildItem -LiteralPath $kept[0].FullName | Should -BeNullOrEmpty -Because 'the folder made in the test was empty'
    }
}

Describe 'Leftovers of an earlier run' {
    AfterEach { try { Assert-GuestTicks $Vm } finally { Reset-LabVmIfNeeded $Vm } }

    It 'refuses a leftover overlay file beside a disk, and Repair-KvmBackup clears it' {
        $overlay = (Get-LabDiskPath -Name $Vm -Disk boot) + ".$SnapshotName"
        Set-Content -Path $overlay -Value 'left over'
        $before = Get-VmSnapshotState
        $errs = Invoke-BackupPipeline -Copy @{ Destination = (New-TestFolder dest) } -Retain @{ Path = (New-TestFolder ret) }
        Assert-Refused 'a leftover overlay file' $errs 'LeftoverOverlayFile' 'Repair-KvmBackup' $before
        $retention = New-TestFolder repair-ret
        # No journal names this file: Repair reports it and leaves it, unless told to include it.
        Repair-KvmBackup -DomainName $Vm -RetentionPath $retention -Confirm:$false -WarningVariable left 3>$null | Should -BeNullOrEmpty
        ($left -join ' ') | Should -Match 'no record of it.*-IncludeUnrecorded'
        Test-Path $overlay | Should -BeTrue
        Repair-KvmBackup -DomainName $Vm -RetentionPath $retention -IncludeUnrecorded -Confirm:$false | Out-Null
        Test-Path $overlay | Should -BeFalse
        Get-ChildItem -Recurse -File $retention | Should -Not -BeNullOrEmpty
    }

    It 'refuses leftover snapshot metadata and overlays, and Repair-KvmBackup clears them' {
        Invoke-Virsh @('snapshot-create-as', '--domain', $Vm, '--name', $SnapshotName, '--disk-only', '--atomic') | Out-Null
        foreach ($t in 'vda', 'vdb') { Invoke-Virsh @('blockcommit', $Vm, $t, '--active', '--pivot') | Out-Null }
        $before = Get-VmSnapshotState
        $errs = Invoke-BackupPipeline -Copy @{ Destination = (New-TestFolder dest) } -Retain @{ Path = (New-TestFolder ret) }
        Assert-Refused 'leftover snapshot metadata' $errs 'LeftoverSnapshotMetadata' 'Repair-KvmBackup' $before
        $actions = Repair-KvmBackup -DomainName $Vm -IncludeUnrecorded -Confirm:$false
        $actions.Result | Should -Contain 'metadata deleted'
        Get-SnapshotNames $Vm | Should -BeNullOrEmpty
        Get-StrayDiskFolderFiles $Vm | Should -BeNullOrEmpty
    }

    It 'refuses a disk still on an overlay with a block job left running, and Repair-KvmBackup pivots it' {
        Invoke-Virsh @('snapshot-create-as', '--domain', $Vm, '--name', $SnapshotName, '--disk-only', '--atomic', '--no-metadata') | Out-Null
        Invoke-Virsh @('blockcommit', $Vm, 'vda', '--active') | Out-Null   # started, never pivoted
        $errs = Invoke-BackupPipeline -Copy @{ Destination = (New-TestFolder dest) } -Retain @{ Path = (New-TestFolder ret) }
        Assert-Refused 'a disk on an overlay with a leftover block job' $errs 'ActiveBlockJob' 'Repair-KvmBackup' $null
        ($errs.FullyQualifiedErrorId | ForEach-Object { ($_ -split ',')[0] }) | Should -Contain 'DiskAlreadyOnOverlay'
        $actions = Repair-KvmBackup -DomainName $Vm -IncludeUnrecorded -Confirm:$false
        ($actions | Where-Object Target -eq vda).Result | Should -Match 'pivoted|committed'
        Test-OnOwnDisks $Vm | Should -BeTrue
        Get-StrayDiskFolderFiles $Vm | Should -BeNullOrEmpty
        $objects = Get-VmDisk $Vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination (New-TestFolder dest) | Invoke-BlockCommit | Move-OverlayToRetention -Path (New-TestFolder ret)
        @($objects).Count | Should -Be 2
    }
}

Describe 'A guest agent that is configured but not running' {
    BeforeAll { Reset-LabVm -Name lab_noagent -NoAgent }
    AfterAll { Invoke-Virsh @('destroy', 'lab_noagent') -AllowFailure | Out-Null }

    It 'refuses with the agent error, names the fix and -CrashConsistent, before any snapshot, and changes nothing' {
        $before = Get-VmSnapshotState lab_noagent
        $before.Files.Count | Should -Be 2 -Because 'the state compared afterwards must hold the two disks'
        $probe = Start-LibvirtSnapshotLog
        try { $errs = Invoke-BackupPipeline -Names lab_noagent -Copy @{ Destination = (New-TestFolder dest) } -Retain @{ Path = (New-TestFolder ret) } }
        finally { $asked = Stop-LibvirtSnapshotLog $probe lab_noagent }
        Assert-Refused 'a VM whose guest agent does not run' $errs 'GuestAgentNotConnected' 'qemu-guest-agent.*-CrashConsistent' $before -Domain lab_noagent
        # The module's own account: it asked the agent, and never ran snapshot-create-as ...
        @($script:Ran | Where-Object { $_ -like 'Running: virsh qemu-agent-command --domain lab_noagent *' }).Count | Should -BeGreaterThan 0
        # ... and libvirtd's: it received no snapshot request for the VM, not even one it refused or undid.
        $asked | Should -BeNullOrEmpty
        Get-StrayDiskFolderFiles lab_noagent | Should -BeNullOrEmpty
    }

    It 'is backed up crash-consistent when asked, and libvirtd''s log shows that snapshot (the probe above sees one)' {
        $probe = Start-LibvirtSnapshotLog
        try {
            $objects = Get-VmDisk lab_noagent | New-KvmDiskSnapshot -CrashConsistent 3>$null | Copy-VmDisk -Destination (New-TestFolder dest) |
                Invoke-BlockCommit | Move-OverlayToRetention -Path (New-TestFolder ret)
        }
        finally { $asked = Stop-LibvirtSnapshotLog $probe lab_noagent }
        @($objects).Count | Should -Be 2
        @($asked).Count | Should -Be 1 -Because 'one snapshot of the VM was taken'
        Test-OnOwnDisks lab_noagent | Should -BeTrue
    }
}
