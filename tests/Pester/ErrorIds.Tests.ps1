# Error ids that no other test raised (issue 14), each raised here through the cmdlets, on the real lab where libvirt
# is involved: its FullyQualifiedErrorId, what its message says, and what became of the VM. The faults are real: an
# immutable file (chattr +i) for a commit or a delete that must fail, a user who may not use libvirt, an SSH server
# of this file's own (an SFTP-only account, a login that prints a banner). Only VMs named lab_ids* are used, and
# they, the sshd and its aliases in ~/.ssh/config are removed in AfterAll.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Vm = 'lab_ids'
    Initialize-Lab -VmName $Vm
    $script:Immutable = [System.Collections.Generic.List[string]]::new()

    function Get-Ids($Errors) { @($Errors | ForEach-Object { $_.FullyQualifiedErrorId }) }
    function Get-Journal([string] $Domain) {
        $file = Join-Path $env:ODAKVMBACKUP_STATE_DIR "journal/d-$Domain.json"
        if (Test-Path -LiteralPath $file) { Get-Content -Raw -LiteralPath $file | ConvertFrom-Json } else { $null }
    }
    # chattr +i: not even root may write, rename or delete it (in a folder: add or remove an entry); AfterAll undoes
    # what a failing test left.
    function Set-Immutable([string[]] $Path) {
        foreach ($p in $Path) { $Immutable.Add($p) }
        & chattr +i @Path
        if ($LASTEXITCODE) { throw "chattr +i $Path failed" }
    }
    function Clear-Immutable([string[]] $Path) {
        & chattr -i @Path
        if ($LASTEXITCODE) { throw "chattr -i $Path failed" }
    }
    # The guest writes a line to both disks; read back later from the VM's own files.
    function Write-GuestMarker([string] $Marker) {
        $r = Invoke-LabGuestCommand -DomainName $Vm -Command "echo $Marker > /mnt/a/ids.txt; echo $Marker > /mnt/b/ids.txt; sync"
        if ($r.ExitCode -ne 0) { throw "guest write failed: $($r.StdErr)" }
    }
    function Assert-MarkerOnOwnDisks([string] $Marker) {
        foreach ($disk in 'boot', 'data') {
            Read-LiveGuestFile $Vm (Get-LabDiskPath -Name $Vm -Disk $disk) /ids.txt | Should -Match $Marker -Because "the guest wrote it to $disk while it was on its overlay"
        }
    }
}

AfterAll {
    foreach ($p in $Immutable) { & chattr -i $p 2>$null }
    foreach ($name in 'lab_ids', 'lab_ids_coll', 'lab_ids_bare') {
        Invoke-Virsh @('destroy', $name) -AllowFailure | Out-Null
        Invoke-Virsh @('undefine', $name, '--snapshots-metadata') -AllowFailure | Out-Null
        foreach ($disk in 'boot', 'data') { Remove-Item -LiteralPath (Split-Path (Get-LabDiskPath -Name $name -Disk $disk)) -Recurse -Force -ErrorAction SilentlyContinue }
    }
}

Describe 'Get-VmDisk' {
    It 'DiskNotFound: a -Target that matches none of the VM''s disks, named with the disks it has' {
        $disks = Get-VmDisk $Vm -Target vdz -ErrorVariable errs -ErrorAction SilentlyContinue
        $disks | Should -BeNullOrEmpty
        Get-Ids $errs | Should -Be @('DiskNotFound,OdaKvmBackup.Commands.GetVmDiskCommand')
        $errs[0].ToString() | Should -Match "'lab_ids' has no disk matching vdz \(its disks: vda, vdb\)"
        $errs[0].ToString() | Should -Match "Get-VmDisk lab_ids"
    }

    It 'LibvirtPermissionDenied: a user who may not open libvirtd''s socket, told to run as root or be allowed on qemu:///system' {
        # This very pwsh, run as nobody: its files linked (hard links, same modes) into a folder nobody can read.
        $pwshCopy = Join-Path (New-TestFolder ids-pwsh) 'pwsh'
        & cp -al $PSHOME $pwshCopy
        if ($LASTEXITCODE) { throw "cannot link $PSHOME into $pwshCopy" }
        $nobodyHome = New-TestFolder ids-nobody-home
        & chown 65534:65534 $nobodyHome
        $dll = Join-Path $pwshCopy (Split-Path -Leaf ([Environment]::GetCommandLineArgs()[0]))
        $command = "Import-Module '$ModuleManifest'; Get-VmDisk $Vm -ErrorVariable e -ErrorAction SilentlyContinue | Out-Null; `$e | ForEach-Object { 'ID ' + `$_.FullyQualifiedErrorId; 'MESSAGE ' + `$_.ToString() }"
        # LIBVIRT_DEFAULT_URI as the help says for a user other than root; without it virsh would ask a session daemon of its own.
        $out = & setpriv --reuid=65534 --regid=65534 --clear-groups env -i "HOME=$nobodyHome" 'PATH=/usr/sbin:/usr/bin:/sbin:/bin' 'LIBVIRT_DEFAULT_URI=qemu:///system' `
            ([Environment]::ProcessPath) $dll -NoProfile -NonInteractive -Command $command 2>&1 | Out-String
        (& stat -c '%a %U' /run/libvirt/libvirt-sock) | Should -Be '770 root' -Because 'the socket is root''s, so nobody may not connect'
        $out | Should -Match '(?m)^ID LibvirtPermissionDenied,OdaKvmBackup\.Commands\.GetVmDiskCommand$'
        $out | Should -Match 'This user may not use libvirt .*Permission denied'
        $out | Should -Match 'Run as root \(sudo\), or as a user allowed on qemu:///system'
    }
}

Describe 'New-KvmDiskSnapshot' {
    BeforeAll {
        # A VM whose second disk lies beside the first, named as the first disk's overlay would be with -SnapshotName bk.img.
        $script:Coll = 'lab_ids_coll'
        Reset-LabVm -Name $Coll -NoStart
        $boot = Get-LabDiskPath -Name $Coll -Disk boot
        $script:CollData = "$boot.bk.img"
        Move-Item -LiteralPath (Get-LabDiskPath -Name $Coll -Disk data) -Destination $CollData
        $xml = [xml](Invoke-Virsh @('dumpxml', $Coll, '--inactive')).StdOut
        ($xml.domain.devices.disk | Where-Object { $_.target.dev -eq 'vdb' }).source.file = $CollData
        $file = Join-Path (New-TestFolder ids-coll) 'domain.xml'
        $xml.Save($file)
        Invoke-Virsh @('define', $file) | Out-Null
        Invoke-Virsh @('start', $Coll) | Out-Null
        Wait-LabGuestAgent -DomainName $Coll | Out-Null
    }
    AfterAll { Invoke-Virsh @('destroy', $Coll) -AllowFailure | Out-Null }

    It 'OverlayCollision: an overlay that would be one of the VM''s own disk images, refused before any snapshot' {
        $folder = Split-Path $CollData
        $before = @(Get-ChildItem -LiteralPath $folder | ForEach-Object Name | Sort-Object)
        $probe = Start-LibvirtSnapshotLog
        try {
            $out = Get-VmDisk $Coll | New-KvmDiskSnapshot -SnapshotName bk.img -ErrorVariable errs -ErrorAction SilentlyContinue |
                Copy-VmDisk -Destination (New-TestFolder ids-coll-dest)
        }
        finally { $asked = Stop-LibvirtSnapshotLog $probe $Coll }
        $out | Should -BeNullOrEmpty
        Get-Ids $errs | Should -Be @('OverlayCollision,OdaKvmBackup.Commands.NewKvmDiskSnapshotCommand')
        $errs[0].ToString() | Should -Match "The overlay for vda of 'lab_ids_coll' would be '$([regex]::Escape($CollData))', which is already one of its disk images"
        $errs[0].ToString() | Should -Match '-OverlayDirectory.*-SnapshotName'
        $asked | Should -BeNullOrEmpty -Because 'libvirtd got no snapshot request'
        @(Get-ChildItem -LiteralPath $folder | ForEach-Object Name | Sort-Object) | Should -Be $before
        (Get-DiskChain $Coll | Where-Object Target -eq vdb).Source | Should -Be $CollData
        foreach ($disk in Get-DiskChain $Coll) { $disk.Chain.Count | Should -Be 0 -Because "$($disk.Target) is on its own file" }
    }
}

Describe 'A rollback that cannot finish' {
    BeforeEach { Reset-LabVmIfNeeded $Vm }

    It 'StillOnOverlays when the commit back fails (the disk''s file immutable); RepairFailed while it stays so; Repair-KvmBackup once it is writable' {
        $dest = New-TestFolder ids-still
        $base = Get-LabDiskPath -Name $Vm -Disk boot
        # Right after the snapshot: vda's own file may not be written (the commit back must fail) and the destination
        # takes nothing (the copy fails, so the run is given up and rolled back).
        $objects = Get-VmDisk $Vm | New-KvmDiskSnapshot -ErrorVariable +errs -ErrorAction SilentlyContinue 3>$null |
            ForEach-Object -Begin { $first = $true } -Process { if ($first) { $first = $false; Set-Immutable $base, $dest }; $_ } |
            Copy-VmDisk -Destination $dest -ErrorVariable +errs -ErrorAction SilentlyContinue |
            Invoke-BlockCommit -ErrorVariable +errs -ErrorAction SilentlyContinue | Move-OverlayToRetention -Path (New-TestFolder ids-still-ret)
        $objects | Should -BeNullOrEmpty
        Get-Ids $errs | Should -Contain 'StillOnOverlays,OdaKvmBackup.Commands.CopyVmDiskCommand'
        $still = $errs | Where-Object { $_.FullyQualifiedErrorId -like 'StillOnOverlays,*' } | Select-Object -First 1
        $still.ToString() | Should -Match "tried to put 'lab_ids' back on its own disks but could not: vda: .*Operation not permitted"
        $still.ToString() | Should -Match 'vda STILL write\(s\) to overlays\. Run Repair-KvmBackup -DomainName lab_ids'
        # libvirt's view: vda on its overlay, over its own file; vdb back on its own file.
        $chain = @(Get-DiskChain $Vm)
        ($chain | Where-Object Target -eq vda).Chain | Should -Be @($base)
        ($chain | Where-Object Target -eq vdb).Chain | Should -BeNullOrEmpty
        (Get-Journal $Vm).Phase | Should -Be 'NeedsRepair'
        $marker = "ids-still-$([guid]::NewGuid().ToString('N').Substring(0, 8))"
        Write-GuestMarker $marker   # on vda's overlay; it must reach vda's own file in the end

        $actions = Repair-KvmBackup -DomainName $Vm -Confirm:$false -ErrorVariable repairErrors -ErrorAction SilentlyContinue
        Get-Ids $repairErrors | Should -Contain 'RepairFailed,OdaKvmBackup.Commands.RepairKvmBackupCommand'
        $failed = $repairErrors | Where-Object { $_.FullyQualifiedErrorId -like 'RepairFailed,*' } | Select-Object -First 1
        $failed.ToString() | Should -Match 'Could not repair .*vda.*Operation not permitted'
        ((Get-DiskChain $Vm) | Where-Object Target -eq vda).Chain | Should -Be @($base) -Because 'the overlay is neither moved nor deleted while it is in the chain'
        (Get-Journal $Vm) | Should -Not -BeNullOrEmpty -Because 'the journal is the record of what is still on overlays'
        @($actions).Count | Should -BeGreaterOrEqual 0

        Clear-Immutable $base, $dest
        $actions = Repair-KvmBackup -DomainName $Vm -Confirm:$false -ErrorVariable repairErrors
        $repairErrors | Should -BeNullOrEmpty
        ($actions.Result -join "`n") | Should -Match 'journal closed'
        Test-OnOwnDisks $Vm | Should -BeTrue
        Get-StrayDiskFolderFiles $Vm | Should -BeNullOrEmpty
        Get-SnapshotNames $Vm | Should -BeNullOrEmpty
        Get-Journal $Vm | Should -BeNullOrEmpty
        Assert-MarkerOnOwnDisks $marker
    }

    It 'RepairNeeded when the VM went back but its overlays cannot be deleted (their folder immutable); Repair-KvmBackup removes them later' {
        $dest = New-TestFolder ids-needed
        $overlays = New-TestFolder ids-overlays
        $objects = Get-VmDisk $Vm | New-KvmDiskSnapshot -OverlayDirectory $overlays -ErrorVariable +errs -ErrorAction SilentlyContinue 3>$null |
            ForEach-Object -Begin { $first = $true } -Process { if ($first) { $first = $false; Set-Immutable $overlays, $dest }; $_ } |
            Copy-VmDisk -Destination $dest -ErrorVariable +errs -ErrorAction SilentlyContinue |
            Invoke-BlockCommit -ErrorVariable +errs -ErrorAction SilentlyContinue | Move-OverlayToRetention -Path (New-TestFolder ids-needed-ret)
        $objects | Should -BeNullOrEmpty
        Get-Ids $errs | Should -Contain 'RepairNeeded,OdaKvmBackup.Commands.CopyVmDiskCommand'
        $needed = $errs | Where-Object { $_.FullyQualifiedErrorId -like 'RepairNeeded,*' } | Select-Object -First 1
        $needed.ToString() | Should -Match "'lab_ids' was put back on its own disks, but: .*was left in place"
        $needed.ToString() | Should -Match 'Run Repair-KvmBackup -DomainName lab_ids to clear what is left'
        Test-OnOwnDisks $Vm | Should -BeTrue -Because 'the commits worked'
        @(Get-ChildItem -LiteralPath $overlays).Count | Should -Be 2 -Because 'the overlays could not be deleted'
        (Get-Journal $Vm).Phase | Should -Be 'NeedsRepair'

        Clear-Immutable $overlays, $dest
        $actions = Repair-KvmBackup -DomainName $Vm -Confirm:$false -ErrorVariable repairErrors
        $repairErrors | Should -BeNullOrEmpty
        ($actions.Result -join "`n") | Should -Match 'journal closed'
        Get-ChildItem -LiteralPath $overlays | Should -BeNullOrEmpty
        Test-OnOwnDisks $Vm | Should -BeTrue
        Get-Journal $Vm | Should -BeNullOrEmpty
    }
}

Describe 'A rollback that cannot finish after every copy was verified' {
    BeforeEach { Reset-LabVmIfNeeded $Vm }

    It 'leaves the set Complete, as the run said, and Repair-KvmBackup keeps it Complete (one rule for both)' {
        $dest = New-TestFolder ids-complete
        $base = Get-LabDiskPath -Name $Vm -Disk boot
        $manifestOf = { Get-ChildItem -Recurse -Filter backup.json -Path $dest | Select-Object -First 1 | ForEach-Object { Get-Content -Raw $_.FullName | ConvertFrom-Json } }
        # The pipeline waits until the set says Complete (every copy read back and matched), makes vda's own file
        # immutable, and stops: the rollback's commit of vda must fail.
        try {
            Get-VmDisk $Vm | New-KvmDiskSnapshot 3>$null | Copy-VmDisk -Destination $dest |
                ForEach-Object {
                    Wait-Until { (& $manifestOf).Status -eq 'Complete' } 'every copy of the set to be verified' 120
                    Set-Immutable $base
                    throw 'stopped by the test after every copy was verified'
                } | Invoke-BlockCommit | Move-OverlayToRetention -Path (New-TestFolder ids-complete-ret)
        }
        catch { $stopped = $_ }
        "$stopped" | Should -Match 'stopped by the test'
        ((Get-DiskChain $Vm) | Where-Object Target -eq vda).Chain | Should -Be @($base) -Because 'the commit back of vda could not run'
        (Get-Journal $Vm).Phase | Should -Be 'NeedsRepair'
        $byRun = & $manifestOf
        $byRun.Status | Should -Be 'Complete' -Because 'every disk had been copied and verified before the run stopped'

        Clear-Immutable $base
        $actions = Repair-KvmBackup -DomainName $Vm -Confirm:$false -ErrorVariable repairErrors
        $repairErrors | Should -BeNullOrEmpty
        ($actions.Result -join "`n") | Should -Match 'marked Complete'
        $byRepair = & $manifestOf
        $byRepair.Status | Should -Be $byRun.Status -Because 'Repair-KvmBackup closes a set by the rule the run used'
        $byRepair.Reason | Should -BeNullOrEmpty
        $byRepair.Disks.Verified | Should -Not -Contain $false
        Test-OnOwnDisks $Vm | Should -BeTrue
        Get-Journal $Vm | Should -BeNullOrEmpty
    }
}

Describe 'Sets on an SSH server the module cannot fully use' {
    BeforeAll {
        # An sshd of this file's own on two free ports of 127.0.0.1 (the lab's shared one is left as it is):
        #   port 1: internal-sftp; the account nobody (shell /usr/sbin/nologin) can use SFTP and nothing else
        #   port 2: root, whose login prints a banner before the SFTP service starts
        $script:SshRoot = New-TestFolder ids-sshd
        & chmod 755 $SshRoot
        $ports = foreach ($i in 1, 2) {
            $l = [System.Net.Sockets.TcpListener]::new([System.Net.IPAddress]::Loopback, 0); $l.Start(); $l.LocalEndpoint.Port; $l.Stop()
        }
        foreach ($key in 'host_key', 'client_key') { & ssh-keygen -q -t ed25519 -N '' -C "odakvm-ids-$key" -f (Join-Path $SshRoot $key) }
        New-Item -ItemType Directory (Join-Path $SshRoot 'keys') | Out-Null
        foreach ($user in 'root', 'nobody') { Copy-Item (Join-Path $SshRoot 'client_key.pub') (Join-Path $SshRoot "keys/$user") }
        & chmod -R a+rX (Join-Path $SshRoot 'keys')
        Set-Content -Path (Join-Path $SshRoot 'sshd_config') -Value @"
Port $($ports[0])
Port $($ports[1])
ListenAddress 127.0.0.1
HostKey $SshRoot/host_key
PidFile $SshRoot/sshd.pid
AuthorizedKeysFile $SshRoot/keys/%u
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
Match LocalPort $($ports[1])
    ForceCommand echo 'Welcome to the backup server'; exec /usr/lib/openssh/sftp-server
"@
        New-Item -ItemType Directory -Force /run/sshd | Out-Null
        & /usr/sbin/sshd -f (Join-Path $SshRoot 'sshd_config') -E (Join-Path $SshRoot 'sshd.log')
        if ($LASTEXITCODE) { throw "sshd did not start: $(Get-Content -Raw (Join-Path $SshRoot 'sshd.log'))" }
        $hostKey = ((Get-Content -Raw (Join-Path $SshRoot 'host_key.pub')).Trim() -split ' ')[0..1] -join ' '
        Set-Content -Path (Join-Path $SshRoot 'known_hosts') -Value ($ports | ForEach-Object { "[127.0.0.1]:$_ $hostKey" })
        # Two aliases in root's ~/.ssh/config, in a block of this file's own at its top (ending with 'Host *', so
        # that what follows keeps its meaning), removed in AfterAll.
        $script:BlockBegin = '# >>> OdaKvmBackup tests/Pester/ErrorIds.Tests.ps1: removed by its AfterAll >>>'
        $script:BlockEnd = '# <<< OdaKvmBackup ErrorIds.Tests.ps1 <<<'
        $script:SshConfig = Join-Path ([Environment]::GetFolderPath('UserProfile')) '.ssh/config'
        $block = @($BlockBegin)
        foreach ($alias in @{ Name = 'odakvm-ids-sftponly'; User = 'nobody'; Port = $ports[0] }, @{ Name = 'odakvm-ids-banner'; User = 'root'; Port = $ports[1] }) {
            $block += "Host $($alias.Name)", '  HostName 127.0.0.1', "  Port $($alias.Port)", "  User $($alias.User)", "  IdentityFile $SshRoot/client_key",
                '  IdentitiesOnly yes', "  UserKnownHostsFile $SshRoot/known_hosts", '  GlobalKnownHostsFile /dev/null'
        }
        $block += 'Host *', $BlockEnd
        New-Item -ItemType Directory -Force (Split-Path $SshConfig) | Out-Null
        $current = if (Test-Path $SshConfig) { [IO.File]::ReadAllText($SshConfig) } else { '' }
        [IO.File]::WriteAllText($SshConfig, ($block -join "`n") + "`n" + $current)
        Wait-Until { (& ssh -F $SshConfig -o BatchMode=yes odakvm-ids-sftponly true 2>&1 | Out-String) -match 'not available' } 'the sshd of this file answering' 20
    }

    AfterAll {
        if (Test-Path $SshConfig) {
            $text = [IO.File]::ReadAllText($SshConfig)
            $begin = $text.IndexOf($BlockBegin)
            $end = $text.IndexOf($BlockEnd)
            if ($begin -ge 0 -and $end -gt $begin) { [IO.File]::WriteAllText($SshConfig, $text.Remove($begin, $end + $BlockEnd.Length + 1 - $begin)) }
        }
        $pidFile = Join-Path $SshRoot 'sshd.pid'
        if (Test-Path $pidFile) { & kill ([int](Get-Content $pidFile).Trim()) }
    }

    It 'SshCommandFailed: an SFTP-only account takes the copies, but cannot check them on the server; the set is Incomplete and the VM back on its disks' {
        Reset-LabVmIfNeeded $Vm
        $remote = New-TestFolder ids-sftponly
        & chown 65534:65534 $remote
        & chmod 700 $remote
        $objects = Get-VmDisk $Vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination "odakvm-ids-sftponly:$remote" -ErrorVariable errs -ErrorAction SilentlyContinue |
            Invoke-BlockCommit | Move-OverlayToRetention -Path (New-TestFolder ids-sftponly-ret)
        @(Get-Ids $errs | Select-Object -Unique) | Should -Be @('SshCommandFailed,OdaKvmBackup.Commands.CopyVmDiskCommand')
        $errs[0].ToString() | Should -Match "Cannot compute the digests of 'odakvm-ids-sftponly:.*' on the server \(exit code 1\)"
        $errs[0].ToString() | Should -Match 'an SFTP-only account is not enough'
        # The copies were written (as nobody), never given their final names: the set says Incomplete, and why.
        $set = @(Get-ChildItem -Directory (Join-Path $remote $Vm))[0].FullName
        (& stat -c '%U' (Join-Path $set 'backup.json')) | Should -Be 'nobody'
        $manifest = Get-Content -Raw (Join-Path $set 'backup.json') | ConvertFrom-Json
        $manifest.Status | Should -Be 'Incomplete'
        $manifest.Reason | Should -Match 'failed its check'
        $objects.SetStatus | Sort-Object -Unique | Should -Be 'Incomplete'
        Test-OnOwnDisks $Vm | Should -BeTrue
        Get-StrayDiskFolderFiles $Vm | Should -BeNullOrEmpty
    }

    It 'PathNotReadable: a destination the SSH user may not read' {
        $remote = New-TestFolder ids-unreadable
        New-Item -ItemType Directory (Join-Path $remote "$Vm/20260101-000000") | Out-Null
        & chmod 700 $remote   # root's: nobody may not list it
        $sets = Get-KvmBackup -Path "odakvm-ids-sftponly:$remote" -ErrorVariable errs -ErrorAction SilentlyContinue
        $sets | Should -BeNullOrEmpty
        Get-Ids $errs | Should -Be @('PathNotReadable,OdaKvmBackup.Commands.GetKvmBackupCommand')
        $errs[0].ToString() | Should -Match "permission denied.*Give the SSH user read access to it on the server"
        $errs[0].ToString() | Should -Match ([regex]::Escape("odakvm-ids-sftponly:$remote"))
    }

    It 'SftpFailed: a login that prints text before the SFTP service, named as the likely cause' {
        $remote = New-TestFolder ids-banner
        $sets = Get-KvmBackup -Path "odakvm-ids-banner:$remote" -ErrorVariable errs -ErrorAction SilentlyContinue
        $sets | Should -BeNullOrEmpty
        Get-Ids $errs | Should -Be @('SftpFailed,OdaKvmBackup.Commands.GetKvmBackupCommand')
        $errs[0].ToString() | Should -Match "The SFTP session with 'odakvm-ids-banner' failed: .*is something printing on the server's login"
        $errs[0].ToString() | Should -Match 'prints nothing \(no echo in \.bashrc\)'
    }
}

Describe 'The way back' {
    BeforeAll {
        Reset-LabVmIfNeeded $Vm
        $script:Destination = New-TestFolder ids-wayback
        $script:Good = Get-VmDisk $Vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination $Destination | Invoke-BlockCommit | Move-OverlayToRetention -Path (New-TestFolder ids-wayback-ret)
        $script:GoodSet = $Good[0].BackupSet
        function Get-BootTests { @(Invoke-Virsh @('list', '--all', '--name')).StdOut -split "`n" | ForEach-Object Trim | Where-Object { $_ -like '*-boottest-*' } }
        $script:BootFolder = Join-Path $env:ODAKVMBACKUP_STATE_DIR 'boot-tests'
    }

    It 'BackupSetNotFound: Restore-KvmBackup -Path given a destination rather than a set, and nothing written' {
        $target = New-TestFolder ids-restore
        $restored = Restore-KvmBackup -Path $Destination -Destination $target -ErrorVariable errs -ErrorAction SilentlyContinue
        $restored | Should -BeNullOrEmpty
        Get-Ids $errs | Should -Be @('BackupSetNotFound,OdaKvmBackup.Commands.RestoreKvmBackupCommand')
        $errs[0].ToString() | Should -Match "'$([regex]::Escape($Destination))' is not a backup set.*Get-KvmBackup -Path"
        Get-ChildItem -LiteralPath $target -Force | Should -BeNullOrEmpty
    }

    It 'InvalidConsolePattern: a -ConsolePattern that is not a regular expression, before anything is booted' {
        $errors = @()
        try { $null = Test-KvmBackup -Path $GoodSet -Boot -ConsolePattern 'login[' }
        catch { $errors += $_ }
        Get-Ids $errors | Should -Be @('InvalidConsolePattern,OdaKvmBackup.Commands.TestKvmBackupCommand')
        $errors[0].ToString() | Should -Match "-ConsolePattern 'login\[' is not a regular expression"
        Get-BootTests | Should -BeNullOrEmpty
    }

    It 'BootTestFailed: a set whose VM has neither a guest agent channel nor a serial console, so nothing could show it booted' {
        # A VM defined without both, backed up shut off (cold).
        $bare = 'lab_ids_bare'
        Reset-LabVm -Name $bare -NoStart
        $xml = [xml](Invoke-Virsh @('dumpxml', $bare, '--inactive')).StdOut
        foreach ($node in @($xml.domain.devices.SelectNodes('channel | serial | console'))) { $null = $node.ParentNode.RemoveChild($node) }
        $file = Join-Path (New-TestFolder ids-bare) 'domain.xml'
        $xml.Save($file)
        Invoke-Virsh @('define', $file) | Out-Null
        $objects = Get-VmDisk $bare | New-KvmDiskSnapshot | Copy-VmDisk -Destination (New-TestFolder ids-bare-dest) | Invoke-BlockCommit | Move-OverlayToRetention -Path (New-TestFolder ids-bare-ret)
        $objects.Consistency | Sort-Object -Unique | Should -Be 'Cold'
        $result = Test-KvmBackup -Path $objects[0].BackupSet -Boot -BootTimeoutSec 60 -ErrorVariable errs -ErrorAction SilentlyContinue
        $result.Passed | Should -BeFalse
        $result.BootResult | Should -Be 'failed'
        Get-Ids $errs | Should -Be @('BootTestFailed,OdaKvmBackup.Commands.TestKvmBackupCommand')
        $errs[0].ToString() | Should -Match 'defines neither a guest agent channel nor a serial console, so nothing can show that it booted'
        $errs[0].ToString() | Should -Match 'Add a guest agent channel or a serial console'
        # Refused before any domain was made: libvirt never started QEMU for it, and nothing is left.
        Test-Path -LiteralPath "/var/log/libvirt/qemu/$($result.BootTestDomain).log" | Should -BeFalse
        Get-BootTests | Should -BeNullOrEmpty
        @(Get-ChildItem -LiteralPath $BootFolder -Force -ErrorAction SilentlyContinue) | Should -BeNullOrEmpty
    }

    It 'BootTestLeftover: a boot test whose folder cannot be deleted says what is left and how to clear it; the next Test-KvmBackup does' {
        # The boot test runs in a pwsh of its own (as the nightly job would); once its domain is defined, a file of
        # its folder is made immutable, so the cleanup cannot delete the folder.
        $out = Join-Path (New-TestFolder ids-leftover) 'ids.txt'
        $script = "Import-Module '$ModuleManifest'; Test-KvmBackup -Path '$GoodSet' -Boot -BootTimeoutSec 120 -ErrorVariable e -ErrorAction SilentlyContinue | Out-Null; `$e | ForEach-Object { 'ID ' + `$_.FullyQualifiedErrorId; 'MESSAGE ' + `$_.ToString() } | Set-Content '$out'"
        $child = Start-Process -FilePath ([Environment]::ProcessPath) -ArgumentList @([Environment]::GetCommandLineArgs()[0], '-NoProfile', '-NonInteractive', '-Command', $script) -PassThru
        $domainXml = { @(Get-ChildItem -Path (Join-Path $BootFolder '*/*.xml') -ErrorAction SilentlyContinue) }
        Wait-Until {
            if ($child.HasExited) { throw 'the boot test ended before its domain was defined' }
            @(& $domainXml).Count -gt 0
        } 'the boot test''s domain XML' 60
        $xmlFile = (& $domainXml)[0]
        Set-Immutable $xmlFile.FullName
        $child.WaitForExit(180000) | Should -BeTrue
        $said = Get-Content -Raw $out
        $said | Should -Match '(?m)^ID BootTestLeftover,OdaKvmBackup\.Commands\.TestKvmBackupCommand'
        $said | Should -Match "The boot test left something behind: '$([regex]::Escape($xmlFile.DirectoryName))' could not be deleted"
        $said | Should -Match 'The next Test-KvmBackup retries the cleanup; or run: virsh destroy .*-boottest-.*; rm -r'
        Get-BootTests | Should -BeNullOrEmpty -Because 'the throw-away domain was destroyed all the same'
        Test-Path -LiteralPath $xmlFile.DirectoryName | Should -BeTrue

        Clear-Immutable $xmlFile.FullName
        $result = Test-KvmBackup -Path $GoodSet -WarningVariable warnings -WarningAction SilentlyContinue
        $result.Passed | Should -BeTrue
        ($warnings -join "`n") | Should -Match "Cleaned up after a boot test that did not finish: the boot test '$Vm-boottest-"
        @(Get-ChildItem -LiteralPath $BootFolder -Force) | Should -BeNullOrEmpty
    }
}
