using OdaKvmBackup.HelpBuilder.Markdown;
using OdaKvmBackup.HelpBuilder.Tests.Support;

namespace OdaKvmBackup.HelpBuilder.Tests;

public class CommandPageParserTests
{
    private readonly CommandPage _page = Fixture.Page("Agreeing", "Get-Widget");

    [Fact]
    public void The_front_matter_is_read_with_YamlDotNet()
    {
        Assert.NotNull(_page.FrontMatter);
        Assert.Equal("Sample.dll-Help.xml", _page.FrontMatter["external help file"]);
        Assert.Equal("Sample", _page.FrontMatter["Module Name"]);
        Assert.Equal("2.0.0", _page.FrontMatter["schema"]);
        Assert.Equal("https://example.org/get-widget", _page.OnlineVersion);
        Assert.Empty(_page.Problems);
    }

    [Fact]
    public void Synopsis_and_description_become_plain_paragraphs()
    {
        Assert.Equal("Get-Widget", _page.Title);
        Assert.Equal(["Gets the widgets of the sample store."], _page.Synopsis);
        Assert.Equal(
        [
            "`Get-Widget` reads widgets by name or by id. It changes nothing.",
            "It returns:",
            "- one `Widget` per match;\n- nothing when no widget matches, with the error `WidgetNotFound`.",
            "See the store's manual (https://example.org/store) for the names.",
        ], _page.Description);
    }

    [Fact]
    public void Each_syntax_block_is_read_with_its_parameter_set()
    {
        Assert.Equal(["ByName", "ById"], _page.Syntax.Select(s => s.SetName));
        Assert.StartsWith("Get-Widget [[-Name] <String[]>]", _page.Syntax[0].Text, StringComparison.Ordinal);
    }

    [Fact]
    public void An_example_is_its_leading_code_blocks_then_remarks()
    {
        Assert.Equal(2, _page.Examples.Count);
        var first = _page.Examples[0];
        Assert.Equal("Example 1: Get a widget by name", first.Title);
        Assert.Equal(["Get-Widget -Name gear", "Name Kind\n---- ----\ngear Round"], first.Code);
        Assert.Equal(["The name may hold wildcards."], first.Remarks);
    }

    [Fact]
    public void Parameters_are_read_in_page_order_with_description_and_yaml()
    {
        Assert.Equal(["Name", "Id", "Kind", "Limit", "Detailed"], _page.Parameters.Select(p => p.Name));
        var detailed = _page.FindParameter("detailed")!;
        Assert.Equal(["Adds the widget's history.", "The history is slow to read."], detailed.Description);
        var kind = _page.FindParameter("Kind")!;
        Assert.Equal(2, kind.Yaml.Count);
        Assert.Equal("ByName", kind.Yaml[0][ParameterYaml.ParameterSets]);
        Assert.Equal("Round, Square", kind.Yaml[0][ParameterYaml.AcceptedValues]);
        Assert.Equal("0", kind.Yaml[1][ParameterYaml.Position]);
    }

    [Fact]
    public void CommonParameters_is_not_a_parameter()
    {
        Assert.Null(_page.FindParameter("CommonParameters"));
    }

    [Fact]
    public void Inputs_outputs_notes_and_links_are_read()
    {
        var input = Assert.Single(_page.Inputs);
        Assert.Equal("System.String[]", input.TypeName);
        Assert.Equal(["Widget names."], input.Description);
        Assert.Equal("Sample.Widget", Assert.Single(_page.Outputs).TypeName);
        Assert.Equal(["Needs read access to the store."], _page.Notes);
        Assert.Equal(
        [
            new RelatedLink("Set-Widget", ""),
            new RelatedLink("about_Sample", ""),
            new RelatedLink("The store", "https://example.org/store"),
        ], _page.RelatedLinks);
    }

    [Fact]
    public void A_heading_inside_a_code_block_is_not_a_section()
    {
        var page = CommandPageParser.Parse("X-Y.md", "# X-Y\n\n## SYNOPSIS\nS.\n\n## DESCRIPTION\n```\n## NOT A SECTION\n```\n");
        Assert.Equal(["## NOT A SECTION"], page.Description);
        Assert.Null(page.Outline.Find("NOT A SECTION"));
    }

    [Fact]
    public void Windows_line_endings_read_like_unix_ones()
    {
        string unix = Fixture.Read("Agreeing", "Get-Widget.md");
        var page = CommandPageParser.Parse("Get-Widget.md", unix.Replace("\n", "\r\n", StringComparison.Ordinal));
        Assert.Equal(_page.Description, page.Description);
        Assert.Equal(_page.Parameters.Select(p => p.Description), page.Parameters.Select(p => p.Description));
    }

    [Fact]
    public void A_yaml_block_that_is_not_YAML_is_a_problem_of_the_page()
    {
        var page = CommandPageParser.Parse("X-Y.md", "# X-Y\n\n## PARAMETERS\n\n### -A\nText.\n\n```yaml\nType: [String\n```\n");
        Assert.Contains(page.Problems, p => p.StartsWith("-A: the yaml block is not YAML", StringComparison.Ordinal));
    }

    [Fact]
    public void A_malformed_parameter_heading_and_an_example_without_code_are_problems()
    {
        var page = CommandPageParser.Parse("X-Y.md", "# X-Y\n\n## EXAMPLES\n\n### Example 1: text only\nNo code.\n\n## PARAMETERS\n\n### Name\nText.\n");
        Assert.Contains("example 'Example 1: text only' does not start with a code block", page.Problems);
        Assert.Contains("parameter heading '### Name' should be '### -Name'", page.Problems);
    }
}
