# What a PowerShell user notices first, on the real lab: Tab completion, wildcards, objects that are safe to pipe
# into ConvertTo-Json and Format-List *, tables that keep paths readable, and a ConfirmImpact that fits each cmdlet.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    Initialize-Lab -VmName linux_vm
    Reset-LabVmIfNeeded linux_vm
    # A shut-off domain whose name needs quotes, and one named like a wildcard pattern.
    $script:OddNames = 'lab odd name', 'lab[1]'
    foreach ($name in $OddNames) {
        $xml = Join-Path (New-TestFolder odd-domain) 'domain.xml'
        Set-Content -LiteralPath $xml "<domain type='qemu'><name>$([Security.SecurityElement]::Escape($name))</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>"
        Invoke-Virsh @('undefine', $name) -AllowFailure | Out-Null
        Invoke-Virsh @('define', $xml) | Out-Null
    }
    function Get-Completions([string] $Line) {
        @((TabExpansion2 -inputScript $Line -cursorColumn $Line.Length).CompletionMatches)
    }
}

AfterAll {
    foreach ($name in $OddNames) { Invoke-Virsh @('undefine', $name) -AllowFailure | Out-Null }
}

Describe 'Tab completion' {
    It 'completes domain names, running ones first, quoting a name that needs it' {
        $all = Get-Completions 'Get-VmDisk '
        $all.ListItemText | Should -Contain 'linux_vm'
        $all.ListItemText | Should -Contain 'lab odd name'
        $running = @(& virsh -c qemu:///system list --name | Where-Object { $_ })
        # 'lab odd name' is shut off and sorts before 'linux_vm' by name: only running-first puts linux_vm ahead of it.
        [string]::CompareOrdinal('lab odd name', 'linux_vm') | Should -BeLessThan 0
        $names = @($all.ListItemText)
        $names.IndexOf('linux_vm') | Should -BeLessThan $names.IndexOf('lab odd name')
        # Every running domain before every shut-off one.
        $runningAt = @(for ($i = 0; $i -lt $names.Count; $i++) { if ($names[$i] -in $running) { $i } })
        $shutOffAt = @(for ($i = 0; $i -lt $names.Count; $i++) { if ($names[$i] -notin $running) { $i } })
        $runningAt.Count | Should -BeGreaterThan 0
        $shutOffAt.Count | Should -BeGreaterThan 0
        ($runningAt | Measure-Object -Maximum).Maximum | Should -BeLessThan ($shutOffAt | Measure-Object -Minimum).Minimum
        ($all | Where-Object ListItemText -eq 'linux_vm').ToolTip | Should -Be 'linux_vm (running)'
        $odd = Get-Completions "Get-VmDisk 'lab o"
        $odd.CompletionText | Should -Be @("'lab odd name'")
        ($odd | Select-Object -First 1).ToolTip | Should -Be 'lab odd name (shut off)'
    }

    It 'completes a name typed with a bracket, and that name then means that domain, not a pattern' {
        (Get-Completions 'Get-VmDisk lab[').CompletionText | Should -Be @("'lab[1]'")
        Get-VmDisk 'lab[1]' -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty   # it has no disks
        $errs | Should -BeNullOrEmpty
    }

    It 'completes the disk targets of the domain named, with where each disk lies' {
        $targets = Get-Completions 'Get-VmDisk -DomainName linux_vm -Target '
        $targets.CompletionText | Should -Be @('vda', 'vdb')
        $targets[0].ToolTip | Should -Match 'vda: .*/linux_boot \(qcow2\)'
        (Get-Completions 'Get-VmDisk -DomainName linux_vm -Target vdb').CompletionText | Should -Be @('vdb')
    }

    It 'completes domain names for Repair-KvmBackup, Get-KvmBackup and Remove-KvmBackup too' {
        foreach ($line in 'Repair-KvmBackup -DomainName linux_v', 'Get-KvmBackup /backup -DomainName linux_v', 'Remove-KvmBackup -Path /backup -DomainName linux_v') {
            (Get-Completions $line).CompletionText | Should -Contain 'linux_vm' -Because $line
        }
    }
}

Describe 'Wildcards' {
    It 'expand domain names and disk targets' {
        $disks = Get-VmDisk 'linux_v*'
        $disks.DomainName | Should -Contain 'linux_vm'
        @($disks | Where-Object DomainName -notlike 'linux_v*') | Should -BeNullOrEmpty
        (Get-VmDisk linux_vm -Target 'vd[ab]').Target | Should -Be @('vda', 'vdb')
        (Get-VmDisk linux_vm -Target '*b').Target | Should -Be @('vdb')
    }

    It 'say so when a pattern matches no domain, and go on with the other names' {
        $disks = Get-VmDisk 'nomatch*', 'linux_vm' -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs.FullyQualifiedErrorId | Should -Be @('DomainNotFound,OdaKvmBackup.Commands.GetVmDiskCommand')
        $errs[0].ToString() | Should -Match "No domain on this host matches 'nomatch\*'.*virsh list --all"
        $disks.Target | Should -Be @('vda', 'vdb')
    }
}

Describe 'Objects that are safe to pass around' {
    AfterAll { Assert-GuestTicks linux_vm }
    BeforeAll {
        $script:objects = @(Get-VmDisk linux_vm | New-KvmDiskSnapshot | Copy-VmDisk -Destination (New-TestFolder use-backup) |
                Invoke-BlockCommit | Move-OverlayToRetention -Path (New-TestFolder use-ret))
    }

    It 'show what a user needs in ConvertTo-Json, and no run state, journal or domain XML' {
        $objects.Count | Should -Be 2
        $json = $objects[0] | ConvertTo-Json -Depth 4
        $json | Should -Not -Match '<domain|"Run"|"Record"|"Journal"|DomainXml'
        $back = $json | ConvertFrom-Json
        $back.DomainName | Should -Be 'linux_vm'
        $back.SetStatus | Should -Be 'Complete'
        $back.BackupFile | Should -Not -BeNullOrEmpty
        $json.Length | Should -BeLessThan 4000 -Because 'one disk of one backup, not the whole run'
    }

    It 'list in Format-List * the properties of a disk backup, and only those' {
        $names = @($objects[0].PSObject.Properties.Name)
        $names | Should -Not -Contain 'Run'
        $text = $objects[0] | Format-List * | Out-String -Width 120
        foreach ($name in 'DomainName', 'Target', 'Stage', 'SetStatus', 'Verified', 'BackupFile', 'TimeOnOverlay', 'CopyTime', 'CommitTime', 'RetainedOverlay') {
            $text | Should -Match "(?m)^$name\s+:"
        }
        $text | Should -Not -Match '<domain'
    }

    It 'are not bound by the Name of files piped in: Get-ChildItem | Get-VmDisk asks for the paths, not the VMs' {
        $folder = New-TestFolder named-like-vms
        New-Item -ItemType Directory (Join-Path $folder 'linux_vm') | Out-Null
        $disks = Get-ChildItem $folder | Get-VmDisk -ErrorVariable errs -ErrorAction SilentlyContinue
        $disks | Should -BeNullOrEmpty
        $errs[0].FullyQualifiedErrorId | Should -Be 'DomainNotFound,OdaKvmBackup.Commands.GetVmDiskCommand'
        $errs[0].ToString() | Should -Match ([regex]::Escape((Join-Path $folder 'linux_vm')))
    }

    It 'wrap in tables the paths an admin must read whole, at the width of a small terminal' {
        $sets = Get-KvmBackup (Split-Path (Split-Path $objects[0].BackupSet))
        $narrow = ($sets | Format-Table | Out-String -Width 80) -replace '\s+', ''
        $narrow | Should -Match ([regex]::Escape(($objects[0].BackupSet -replace '\s+', '')))
        $disks = ($objects | Format-Table | Out-String -Width 80) -replace '\s+', ''
        $disks | Should -Match ([regex]::Escape(($objects[0].BackupFile -replace '\s+', '')))
    }
}

Describe 'ConfirmImpact' {
    It 'is High for the cmdlets that delete or replace, and no higher than Medium for the others' {
        $impact = @{}
        foreach ($command in Get-Command -Module OdaKvmBackup) {
            $attribute = $command.ImplementingType.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $true)[0]
            $impact[$command.Name] = if ($attribute.SupportsShouldProcess) { [string]$attribute.ConfirmImpact } else { 'none' }
        }
        $impact['Remove-KvmBackup'] | Should -Be 'High'
        $impact['Repair-KvmBackup'] | Should -Be 'High'
        foreach ($name in 'New-KvmDiskSnapshot', 'Copy-VmDisk', 'Invoke-BlockCommit', 'Move-OverlayToRetention', 'Restore-KvmBackup') {
            $impact[$name] | Should -BeIn @('Low', 'Medium') -Because "$name deletes nothing (what it replaces is kept aside), yet changes the host: -WhatIf and -Confirm"
        }
        foreach ($name in 'Get-VmDisk', 'Get-KvmBackup', 'Test-KvmBackup') { $impact[$name] | Should -Be 'none' -Because "$name changes nothing" }
    }
}
