# The whole hot backup, end to end, on the real libvirt + QEMU lab (issue: one pipeline, proven on a real host).
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    Initialize-Lab -VmName linux_vm, linux_vm2   # throws, failing every test here, when the lab cannot start
    Reset-LabVmIfNeeded linux_vm
    Reset-LabVmIfNeeded linux_vm2
}

Describe 'Get-VmDisk' {
    It 'lists both disks of linux_vm with their formats, read from the domain XML' {
        $disks = Get-VmDisk linux_vm
        $disks.Count | Should -Be 2
        $boot = $disks | Where-Object Target -eq vda
        $boot.Source | Should -Be (Get-LabDiskPath -Name linux_vm -Disk boot)
        $boot.Format | Should -Be 'qcow2'
        $boot.Device | Should -Be 'disk'
        $boot.OnOverlay | Should -BeFalse
        ($disks | Where-Object Target -eq vdb).Format | Should -Be 'raw'
        $disks[0].PSObject.TypeNames[0] | Should -Be 'OdaKvmBackup.Core.Host.VmDisk'
    }

    It 'takes domain names from the pipeline, by value and by property name' {
        @('linux_vm', 'linux_vm2' | Get-VmDisk).Count | Should -Be 4
        @([pscustomobject]@{ DomainName = 'linux_vm2' } | Get-VmDisk).DomainName | Sort-Object -Unique | Should -Be 'linux_vm2'
    }

    It 'reports an unknown domain with an error that names it, and goes on with the others' {
        $disks = Get-VmDisk 'no_such_vm', 'linux_vm' -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs.Count | Should -Be 1
        $errs[0].FullyQualifiedErrorId | Should -Be 'DomainNotFound,OdaKvmBackup.Commands.GetVmDiskCommand'
        $errs[0].ToString() | Should -Match "no domain named 'no_such_vm'"
        $errs[0].ToString() | Should -Match 'virsh list --all'
        $disks.Count | Should -Be 2
    }
}

Describe 'The one-liner on a running VM' {
    AfterAll { Assert-GuestTicks linux_vm }
    BeforeAll {
        $backup = New-TestFolder backup
        $retention = New-TestFolder retention
        $marker = "written-after-snapshot-$([guid]::NewGuid().ToString('N'))"
        Start-Sleep -Seconds 2   # let the guest's writer put some ticks on disk first
        # The README's pipeline, with one extra stage: right after the snapshot, the guest writes a marker file.
        $script:verbose = $null
        $script:result = Get-VmDisk linux_vm |
            New-KvmDiskSnapshot |
            ForEach-Object -Begin { $written = $false } -Process {
                if (-not $written) {
                    $r = Invoke-LabGuestCommand -DomainName linux_vm -Command "echo $marker > /mnt/a/marker.txt && sync"
                    if ($r.ExitCode -ne 0) { throw "marker write failed: $($r.StdErr)" }
                    $written = $true
                }
                $_
            } |
            Copy-VmDisk -Destination $backup |
            ForEach-Object -Begin { $script:compared = @{} } -Process {
                # An independent check, while the source is still frozen (before the commit): qemu-img compares what the
                # guest sees in the copy with its source. The copy may still be checked by the module (.partial).
                foreach ($copy in "$($_.BackupFile).partial", $_.BackupFile) {
                    # The module renames the copy once its own check passes: whichever name it has now.
                    $out = & qemu-img compare -U -f $_.Format -F $_.Format $copy $_.Source 2>&1 | Out-String
                    if ($out -notmatch 'Could not open') { break }
                }
                $script:compared[$_.Target] = [pscustomobject]@{ ExitCode = $LASTEXITCODE; Output = $out.Trim() }
                $_
            } |
            Invoke-BlockCommit |
            Move-OverlayToRetention -Path $retention -Verbose 4>&1 -OutVariable all |
            Where-Object { $_ -isnot [System.Management.Automation.VerboseRecord] } |
            ForEach-Object -Begin { $script:seenOnTheWay = @() } -Process {
                # What a script further down the pipeline sees, as each object passes.
                $manifest = Get-Content -Raw (Join-Path $_.BackupSet 'backup.json') | ConvertFrom-Json
                $script:seenOnTheWay += [pscustomobject]@{ SetStatus = $_.SetStatus; Verified = $_.Verified; Manifest = $manifest.Status }
                $_
            }
        $script:set = Join-Path $backup "linux_vm/$($result[0].RunId)"
    }

    It 'emits one object per disk that went through every stage' {
        $result.Count | Should -Be 2
        $result.Stage | Sort-Object -Unique | Should -Be 'Retained'
        $result.Consistency | Sort-Object -Unique | Should -Be 'Quiesced'
    }

    It 'hands each object on with its set final: Complete and verified, as backup.json already says' {
        $seenOnTheWay.Count | Should -Be 2
        foreach ($seen in $seenOnTheWay) {
            $seen.SetStatus | Should -Be 'Complete'
            $seen.Verified | Should -BeTrue
            $seen.Manifest | Should -Be 'Complete'
        }
    }

    It 'leaves every disk writing to its own file again, live and in the saved definition' {
        Test-OnOwnDisks linux_vm | Should -BeTrue
    }

    It 'leaves no snapshot metadata' {
        Get-SnapshotNames linux_vm | Should -BeNullOrEmpty
    }

    It 'moves the overlays into the retention folder and leaves nothing else beside the disks' {
        foreach ($disk in $result) {
            $disk.RetainedOverlay | Should -Be (Join-Path $retention "linux_vm/$($disk.RunId)/$(Split-Path $disk.Overlay -Leaf)")
            Test-Path -LiteralPath $disk.RetainedOverlay | Should -BeTrue
            Test-Path -LiteralPath $disk.Overlay | Should -BeFalse
            (& qemu-img info --output=json -U $disk.RetainedOverlay | ConvertFrom-Json).'backing-filename' | Should -Be $disk.Source
        }
        Get-StrayDiskFolderFiles linux_vm | Should -BeNullOrEmpty
    }

    It 'writes a backup set with both disks, in their own formats, that pass qemu-img check' {
        $boot = Join-Path $set 'linux_boot'
        $data = Join-Path $set 'disco_secundario'
        Get-ImageFormat $boot | Should -Be 'qcow2'
        Get-ImageFormat $data | Should -Be 'raw'
        Test-ImageCheck $boot | Should -BeTrue
        Test-ImageCheck $data | Should -BeTrue
        Test-Path (Join-Path $set 'domain.xml') | Should -BeTrue
    }

    It 'holds exactly what the frozen source held, by qemu-img compare (a tool independent of the module)' {
        $compared.Keys | Sort-Object | Should -Be @('vda', 'vdb')
        foreach ($target in 'vda', 'vdb') {
            $compared[$target].ExitCode | Should -Be 0 -Because $compared[$target].Output
            $compared[$target].Output | Should -Match 'Images are identical'
        }
    }

    It 'copies file systems that check clean (the freeze worked)' {
        foreach ($file in 'linux_boot', 'disco_secundario') {
            $check = Test-LabImageFileSystem -Path (Join-Path $set $file)
            $check.Clean | Should -BeTrue -Because $check.Output
        }
    }

    It 'keeps the fully allocated raw disk sparse in the backup' {
        $data = Join-Path $set 'disco_secundario'
        (Get-Item $data).Length | Should -Be (Get-Item (Get-LabDiskPath -Name linux_vm -Disk data)).Length
        Get-AllocatedBytes $data | Should -BeLessThan ((Get-Item $data).Length / 2)
    }

    It 'records a Complete, verified, quiesced set in backup.json' {
        $manifest = Get-Content -Raw (Join-Path $set 'backup.json') | ConvertFrom-Json
        $manifest.Status | Should -Be 'Complete'
        $manifest.Consistency | Should -Be 'Quiesced'
        $manifest.Disks.Count | Should -Be 2
        foreach ($disk in $manifest.Disks) {
            $disk.Verified | Should -BeTrue
            $disk.ContentDigest | Should -Be ($result | Where-Object Target -eq $disk.Target).ContentDigest
        }
    }

    It 'has none of what the guest wrote after the snapshot in the copy, and all of it in the VM disk' {
        { Get-LabImageFile -Path (Join-Path $set 'linux_boot') -GuestPath /marker.txt } | Should -Throw '*File not found*'
        Read-LiveGuestFile linux_vm (Get-LabDiskPath -Name linux_vm -Disk boot) /marker.txt | Should -Match $marker
        $copyTicks = Get-LabImageTickCount -Path (Join-Path $set 'linux_boot')
        $copyTicks | Should -BeGreaterThan 0
        $liveTicks = (Invoke-LabGuestCommand -DomainName linux_vm -Command 'wc -l < /mnt/a/ticks.log').StdOut.Trim()
        [int]$liveTicks | Should -BeGreaterThan $copyTicks
    }

    It 'shows each virsh command it runs with -Verbose' {
        $lines = $all | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] } | ForEach-Object Message
        $lines | Should -Contain 'Running: virsh list --all --name'
    }
}

Describe 'The README one-liner, exactly as written' {
    AfterAll { Assert-GuestTicks linux_vm }
    It 'backs up linux_vm into /backup and keeps the overlays in /kvm/retencao' {
        New-Item -ItemType Directory -Force -Path /backup, /kvm/retencao | Out-Null
        $verbose = & { Get-VmDisk linux_vm | New-KvmDiskSnapshot -Verbose | Copy-VmDisk -Destination /backup | Invoke-BlockCommit | Move-OverlayToRetention -Path /kvm/retencao } 4>&1
        $objects = @($verbose | Where-Object { $_ -isnot [System.Management.Automation.VerboseRecord] })
        $objects.Count | Should -Be 2
        $run = $objects[0].RunId
        (Get-Content -Raw "/backup/linux_vm/$run/backup.json" | ConvertFrom-Json).Status | Should -Be 'Complete'
        Test-Path "/kvm/retencao/linux_vm/$run/linux_boot.$SnapshotName" | Should -BeTrue
        Test-OnOwnDisks linux_vm | Should -BeTrue
        $snapshotLine = $verbose | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] -and $_.Message -like 'Running: virsh snapshot-create-as*' }
        $snapshotLine.Message | Should -BeLike "Running: virsh snapshot-create-as --domain linux_vm --name $SnapshotName --disk-only --atomic --quiesce --diskspec vda,snapshot=external,file=*"
    }
}

Describe 'Two VMs in one pipeline' {
    AfterAll { Assert-GuestTicks linux_vm, linux_vm2 }
    It 'gives each VM its own atomic snapshot and its own complete backup set' {
        $backup = New-TestFolder backup2
        $retention = New-TestFolder retention2
        $all = & { 'linux_vm', 'linux_vm2' | Get-VmDisk | New-KvmDiskSnapshot -Verbose |
            Copy-VmDisk -Destination $backup | Invoke-BlockCommit | Move-OverlayToRetention -Path $retention } 4>&1
        $objects = @($all | Where-Object { $_ -isnot [System.Management.Automation.VerboseRecord] })
        $objects.Count | Should -Be 4
        $snapshots = @($all | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] -and $_.Message -like 'Running: virsh snapshot-create-as*' })
        $snapshots.Count | Should -Be 2
        $snapshots[0].Message | Should -Match '--domain linux_vm --name .*vda,snapshot=external.*vdb,snapshot=external'
        $snapshots[1].Message | Should -Match '--domain linux_vm2 --name .*vda,snapshot=external.*vdb,snapshot=external'
        foreach ($vm in 'linux_vm', 'linux_vm2') {
            $mine = $objects | Where-Object DomainName -eq $vm
            $mine.Count | Should -Be 2
            $mine.Stage | Sort-Object -Unique | Should -Be 'Retained'
            (Get-Content -Raw (Join-Path $mine[0].BackupSet 'backup.json') | ConvertFrom-Json).Status | Should -Be 'Complete'
            Test-OnOwnDisks $vm | Should -BeTrue
            Get-SnapshotNames $vm | Should -BeNullOrEmpty
            Get-StrayDiskFolderFiles $vm | Should -BeNullOrEmpty
            foreach ($file in 'linux_boot', 'disco_secundario') {
                (Test-LabImageFileSystem -Path (Join-Path $mine[0].BackupSet $file)).Clean | Should -BeTrue
            }
        }
    }
}

Describe 'A VM whose disks take different times to copy' {
    AfterAll { Assert-GuestTicks linux_vm }
    BeforeAll {
        Reset-LabVmIfNeeded linux_vm
        $backup = New-TestFolder backup-paced
        # 8 MiB/s per disk: the 1.3 MiB qcow2 boot disk is copied at once; the 64 MiB raw vdisk's data extents (30 to
        # 64 MiB, as the guest has written it) take 4 to 8 s.
        $script:seen = @(Get-VmDisk linux_vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination $backup -BandwidthLimit 8 |
                Invoke-BlockCommit | Move-OverlayToRetention -Path (New-TestFolder retention-paced) |
                ForEach-Object {
                    $manifest = Get-Content -Raw (Join-Path $_.BackupSet 'backup.json') | ConvertFrom-Json
                    [pscustomobject]@{ Target = $_.Target; OnOverlay = $_.TimeOnOverlay.TotalSeconds; SetStatus = $_.SetStatus; Manifest = $manifest.Status; BytesRead = $_.BytesRead }
                })
    }

    It 'puts each disk back on its own file as soon as its own copy is done, not when the slowest one is' {
        $vda = $seen | Where-Object Target -eq vda
        $vdb = $seen | Where-Object Target -eq vdb
        $vdb.BytesRead | Should -BeGreaterThan 24MB -Because 'the raw vdisk holds at least that much data'
        $vdb.OnOverlay | Should -BeGreaterThan (0.9 * $vdb.BytesRead / 8MB) -Because "the raw vdisk's $($vdb.BytesRead) bytes are read at 8 MiB/s"
        $vda.OnOverlay | Should -BeLessThan ($vdb.OnOverlay - 2) -Because 'vda was committed while vdb was still copied'
        Test-OnOwnDisks linux_vm | Should -BeTrue
    }

    It 'hands on no object before its set is final: each shows Complete, as backup.json already says' {
        $seen.Count | Should -Be 2
        $seen.SetStatus | Sort-Object -Unique | Should -Be 'Complete'
        $seen.Manifest | Sort-Object -Unique | Should -Be 'Complete'
    }
}

Describe '-WhatIf' {
    It 'changes nothing: domain XML, files beside the disks, snapshot list, destination and retention stay as they were' {
        $backup = New-TestFolder whatif-backup
        $retention = New-TestFolder whatif-retention
        $before = @{
            Live = (Invoke-Virsh @('dumpxml', 'linux_vm')).StdOut
            Inactive = (Invoke-Virsh @('dumpxml', 'linux_vm', '--inactive')).StdOut
            Files = (Get-LabDiskMap linux_vm).Values | ForEach-Object { Get-ChildItem (Split-Path $_) -Force } | ForEach-Object FullName | Sort-Object
            Snapshots = Get-SnapshotNames linux_vm
        }
        # "What if:" lines go to the host, not to a stream: a transcript records them.
        $transcript = Join-Path $backup '../whatif-transcript.txt'
        Start-Transcript -Path $transcript | Out-Null
        try {
            $out = Get-VmDisk linux_vm | New-KvmDiskSnapshot -WhatIf | Copy-VmDisk -Destination $backup -WhatIf |
                Invoke-BlockCommit -WhatIf | Move-OverlayToRetention -Path $retention -WhatIf
        }
        finally { Stop-Transcript | Out-Null }
        $out | Should -BeNullOrEmpty
        Get-Content -Raw $transcript | Should -Match 'What if: Performing the operation "Create external snapshot .FILE_STAGE_BACKUP.TEMP. of vda, vdb \(quiesced by the guest agent\)'
        (Invoke-Virsh @('dumpxml', 'linux_vm')).StdOut | Should -Be $before.Live
        (Invoke-Virsh @('dumpxml', 'linux_vm', '--inactive')).StdOut | Should -Be $before.Inactive
        (Get-LabDiskMap linux_vm).Values | ForEach-Object { Get-ChildItem (Split-Path $_) -Force } | ForEach-Object FullName | Sort-Object | Should -Be $before.Files
        Get-SnapshotNames linux_vm | Should -Be $before.Snapshots
        Get-ChildItem $backup -Force | Should -BeNullOrEmpty
        Get-ChildItem $retention -Force | Should -BeNullOrEmpty
    }
}

Describe 'A shut-off VM' {
    AfterAll { Reset-LabVmIfNeeded linux_vm2 }

    It 'gets a cold copy of its disks, no snapshot, recorded as Cold' {
        Invoke-Virsh @('shutdown', 'linux_vm2', '--mode', 'agent') | Out-Null
        $deadline = (Get-Date).AddSeconds(60)
        while ((Invoke-Virsh @('domstate', 'linux_vm2')).StdOut.Trim() -ne 'shut off') {
            if ((Get-Date) -gt $deadline) { throw 'linux_vm2 did not shut off' }
            Start-Sleep -Milliseconds 250
        }
        $backup = New-TestFolder cold-backup
        $retention = New-TestFolder cold-retention
        $objects = Get-VmDisk linux_vm2 | New-KvmDiskSnapshot -WarningVariable warn 3>$null |
            Copy-VmDisk -Destination $backup | Invoke-BlockCommit | Move-OverlayToRetention -Path $retention
        ($warn -join ' ') | Should -Match 'shut off.*cold'
        $objects.Count | Should -Be 2
        $objects.Consistency | Sort-Object -Unique | Should -Be 'Cold'
        $objects.Overlay | Where-Object { $_ } | Should -BeNullOrEmpty
        $manifest = Get-Content -Raw (Join-Path $objects[0].BackupSet 'backup.json') | ConvertFrom-Json
        $manifest.Status | Should -Be 'Complete'
        $manifest.Consistency | Should -Be 'Cold'
        Test-OnOwnDisks linux_vm2 | Should -BeTrue
        Get-ChildItem $retention | Should -BeNullOrEmpty
        (Test-LabImageFileSystem -Path (Join-Path $objects[0].BackupSet 'linux_boot')).Clean | Should -BeTrue
    }
}
