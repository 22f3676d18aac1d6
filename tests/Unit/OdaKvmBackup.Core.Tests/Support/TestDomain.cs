using System.Xml.Linq;

namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>A disk for <see cref="TestDomain.Xml"/>: its file, and the image below it when it is on an overlay.</summary>
internal sealed record TestDisk(string Target, string Source, string Format = "qcow2", string Type = "file")
{
    public string? Backing { get; init; }
    /// <summary>null: the XML does not say what format the backing image is (no &lt;format/&gt; element).</summary>
    public string? BackingFormat { get; init; } = "raw";
    /// <summary>&lt;shareable/&gt;: other domains (a cluster's nodes) write to the same file.</summary>
    public bool Shareable { get; init; }
    public bool ReadOnly { get; init; }
}

/// <summary>Domain XML in the shape of libvirt 9's dumpxml, for the service tests (the parser tests use Fixtures/).</summary>
internal static class TestDomain
{
    public static string Xml(string name, IEnumerable<TestDisk> disks, string? agentState = "connected", bool live = true)
    {
        var devices = new XElement("devices", new XElement("emulator", "/usr/libexec/qemu-kvm"));
        var index = 1;
        foreach (var disk in disks)
        {
            var source = new XElement("source", new XAttribute(disk.Type == "block" ? "dev" : "file", disk.Source));
            XElement backing;
            if (disk.Backing is null)
            {
                backing = new XElement("backingStore");
            }
            else
            {
                backing = new XElement("backingStore", new XAttribute("type", "file"),
                    disk.BackingFormat is null ? null : new XElement("format", new XAttribute("type", disk.BackingFormat)),
                    new XElement("source", new XAttribute("file", disk.Backing)),
                    new XElement("backingStore"));
                if (live)
                    backing.SetAttributeValue("index", index++);
            }
            if (live)
                source.SetAttributeValue("index", index++);
            var element = new XElement("disk", new XAttribute("type", disk.Type), new XAttribute("device", "disk"),
                new XElement("driver", new XAttribute("name", "qemu"), new XAttribute("type", disk.Format)),
                source);
            if (live || disk.Backing is not null)
                element.Add(backing);
            element.Add(new XElement("target", new XAttribute("dev", disk.Target), new XAttribute("bus", "virtio")));
            if (disk.ReadOnly)
                element.Add(new XElement("readonly"));
            if (disk.Shareable)
                element.Add(new XElement("shareable"));
            devices.Add(element);
        }
        if (agentState is not null)
        {
            var target = new XElement("target", new XAttribute("type", "virtio"), new XAttribute("name", "org.qemu.guest_agent.0"));
            if (live)
                target.SetAttributeValue("state", agentState);
            devices.Add(new XElement("channel", new XAttribute("type", "unix"), target));
        }
        var domain = new XElement("domain", new XAttribute("type", "kvm"), new XElement("name", name), devices);
        if (live)
            domain.SetAttributeValue("id", 7);
        return domain.ToString();
    }

    /// <summary>`qemu-img info --output=json` in the shape of Fixtures/*.qemu-img-info.json.</summary>
    public static string ImageInfoJson(string path, string format, long virtualSize, long actualSize, string? backing = null, string? backingFormat = null)
    {
        var json = new System.Text.Json.Nodes.JsonObject
        {
            ["virtual-size"] = virtualSize,
            ["filename"] = path,
            ["format"] = format,
            ["actual-size"] = actualSize,
            ["dirty-flag"] = false,
        };
        if (backing is not null)
        {
            json["backing-filename-format"] = backingFormat;
            json["full-backing-filename"] = backing;
            json["backing-filename"] = backing;
        }
        return json.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n";
    }
}
